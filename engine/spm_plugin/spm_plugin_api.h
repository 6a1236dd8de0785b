// The C interface of libflute_spm.so: SentencePiece behind standard types only, so that the
// library's bundled protobuf 3.14 and its `absl::string_view` shim never meet the rest of the
// process (toolchain.md, traps 1 and 2). Shared by the plugin (spm_plugin.cc) and the client
// (engine/spm_tokenizer.cc), which loads it with dlopen and looks these names up with dlsym.
//
// Memory: strings and arrays the plugin allocates for the caller (error messages, encoded ids,
// decoded text) are released with flute_spm_free. Piece strings returned by
// flute_spm_id_to_piece belong to the handle and stay valid until flute_spm_destroy.
// A handle is safe to use from several threads at once (SentencePiece encode/decode are const).
#pragma once

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// Bumped whenever a signature below changes; the client refuses a plugin of another version.
#define FLUTE_SPM_API_VERSION 1

typedef struct FluteSpm FluteSpm;

int flute_spm_api_version(void);

// Loads the SentencePiece model at `model_path`. With disable_dummy_prefix != 0 the model's
// normalizer_spec.add_dummy_prefix is switched off before loading (as Hugging Face's
// LlamaTokenizer does with legacy=false). Returns NULL and sets *error (free with
// flute_spm_free) on failure.
FluteSpm* flute_spm_create(const char* model_path, int disable_dummy_prefix, char** error);
void flute_spm_destroy(FluteSpm* spm);
void flute_spm_free(void* ptr);

// Encodes text[0, text_len) into *ids_out (malloc'ed, *num_ids entries; free with
// flute_spm_free; may be NULL when *num_ids is 0). Returns 0, or -1 with *error set.
int flute_spm_encode(const FluteSpm* spm, const char* text, size_t text_len, int32_t** ids_out,
                     size_t* num_ids, char** error);

// SentencePiece's own decode of ids (control tokens vanish). *text_out is malloc'ed and
// NUL-terminated, *text_len bytes before the NUL. Returns 0, or -1 with *error set.
int flute_spm_decode(const FluteSpm* spm, const int32_t* ids, size_t num_ids, char** text_out,
                     size_t* text_len, char** error);

// The piece of `id` (NULL for an id out of range), *len bytes, owned by the handle.
const char* flute_spm_id_to_piece(const FluteSpm* spm, int32_t id, size_t* len);
// The id of `piece`, or the unk id when the piece is not in the vocabulary.
int32_t flute_spm_piece_to_id(const FluteSpm* spm, const char* piece, size_t len);

int32_t flute_spm_vocab_size(const FluteSpm* spm);
int32_t flute_spm_bos_id(const FluteSpm* spm);  // -1 when the model has none
int32_t flute_spm_eos_id(const FluteSpm* spm);
int32_t flute_spm_unk_id(const FluteSpm* spm);
int32_t flute_spm_pad_id(const FluteSpm* spm);

int flute_spm_is_control(const FluteSpm* spm, int32_t id);
int flute_spm_is_byte(const FluteSpm* spm, int32_t id);
int flute_spm_is_unknown(const FluteSpm* spm, int32_t id);
int flute_spm_is_unused(const FluteSpm* spm, int32_t id);

// The model file's normalizer_spec.add_dummy_prefix (before any disable_dummy_prefix), 0 or 1.
int flute_spm_model_add_dummy_prefix(const FluteSpm* spm);

#ifdef __cplusplus
}  // extern "C"
#endif
