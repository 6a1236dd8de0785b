// libflute_spm.so: SentencePiece behind the C interface of spm_plugin_api.h.
// Includes no Abseil header (sentencepiece_processor.h defines its own absl::string_view) and
// exports nothing but the flute_spm_* functions (hidden visibility by default).
#include "spm_plugin_api.h"  // same directory: this target has no include path

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <sentencepiece_processor.h>

#define FLUTE_SPM_EXPORT extern "C" __attribute__((visibility("default")))

struct FluteSpm {
  sentencepiece::SentencePieceProcessor processor;
  bool model_add_dummy_prefix = true;
};

namespace {

// A malloc'ed, NUL-terminated copy of `s` for the caller to flute_spm_free.
char* CopyToMalloc(const std::string& s) {
  char* out = static_cast<char*>(std::malloc(s.size() + 1));
  if (out == nullptr) return nullptr;
  std::memcpy(out, s.data(), s.size());
  out[s.size()] = '\0';
  return out;
}

void SetError(char** error, const std::string& message) {
  if (error != nullptr) *error = CopyToMalloc(message);
}

// --- Minimal protobuf wire-format handling, enough to edit ModelProto.normalizer_spec. ---

bool ReadVarint(const std::string& data, size_t* pos, uint64_t* value) {
  uint64_t result = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (*pos >= data.size()) return false;
    const uint8_t byte = static_cast<uint8_t>(data[(*pos)++]);
    result |= static_cast<uint64_t>(byte & 0x7f) << shift;
    if ((byte & 0x80) == 0) {
      *value = result;
      return true;
    }
  }
  return false;
}

void WriteVarint(uint64_t value, std::string* out) {
  while (value >= 0x80) {
    out->push_back(static_cast<char>((value & 0x7f) | 0x80));
    value >>= 7;
  }
  out->push_back(static_cast<char>(value));
}

// One field of a message: its number, wire type and the byte range [begin, end) of the whole
// field (tag included); for length-delimited fields also the payload range.
struct WireField {
  uint32_t number = 0;
  uint32_t wire_type = 0;
  uint64_t varint = 0;
  size_t begin = 0, end = 0;
  size_t payload_begin = 0, payload_end = 0;
};

bool ReadField(const std::string& data, size_t* pos, WireField* field) {
  field->begin = *pos;
  uint64_t tag = 0;
  if (!ReadVarint(data, pos, &tag)) return false;
  field->number = static_cast<uint32_t>(tag >> 3);
  field->wire_type = static_cast<uint32_t>(tag & 7);
  switch (field->wire_type) {
    case 0:
      if (!ReadVarint(data, pos, &field->varint)) return false;
      break;
    case 1:
      if (data.size() - *pos < 8) return false;
      *pos += 8;
      break;
    case 2: {
      uint64_t length = 0;
      if (!ReadVarint(data, pos, &length) || length > data.size() - *pos) return false;
      field->payload_begin = *pos;
      *pos += length;
      field->payload_end = *pos;
      break;
    }
    case 5:
      if (data.size() - *pos < 4) return false;
      *pos += 4;
      break;
    default:
      return false;  // groups are not used by sentencepiece_model.proto
  }
  field->end = *pos;
  return true;
}

constexpr uint32_t kModelNormalizerSpecField = 3;   // ModelProto.normalizer_spec
constexpr uint32_t kNormalizerAddDummyPrefix = 3;   // NormalizerSpec.add_dummy_prefix

// Copies NormalizerSpec `spec` without add_dummy_prefix, records its value (default true), and
// appends add_dummy_prefix=false when `disable`.
bool RewriteNormalizerSpec(const std::string& spec, bool disable, std::string* out,
                           bool* add_dummy_prefix) {
  size_t pos = 0;
  while (pos < spec.size()) {
    WireField field;
    if (!ReadField(spec, &pos, &field)) return false;
    if (field.number == kNormalizerAddDummyPrefix && field.wire_type == 0) {
      *add_dummy_prefix = field.varint != 0;
      if (disable) continue;
    }
    out->append(spec, field.begin, field.end - field.begin);
  }
  if (disable) {
    WriteVarint((kNormalizerAddDummyPrefix << 3) | 0, out);
    WriteVarint(0, out);
  }
  return true;
}

// Rewrites a serialized ModelProto so that normalizer_spec.add_dummy_prefix is false (when
// `disable`); reports the model's own add_dummy_prefix.
bool EditModelProto(const std::string& model, bool disable, std::string* out,
                    bool* add_dummy_prefix) {
  *add_dummy_prefix = true;
  bool saw_normalizer = false;
  size_t pos = 0;
  while (pos < model.size()) {
    WireField field;
    if (!ReadField(model, &pos, &field)) return false;
    if (field.number != kModelNormalizerSpecField || field.wire_type != 2) {
      out->append(model, field.begin, field.end - field.begin);
      continue;
    }
    saw_normalizer = true;
    std::string spec;
    if (!RewriteNormalizerSpec(
            model.substr(field.payload_begin, field.payload_end - field.payload_begin), disable,
            &spec, add_dummy_prefix)) {
      return false;
    }
    WriteVarint((kModelNormalizerSpecField << 3) | 2, out);
    WriteVarint(spec.size(), out);
    out->append(spec);
  }
  if (!saw_normalizer && disable) {
    std::string spec;
    RewriteNormalizerSpec("", true, &spec, add_dummy_prefix);
    WriteVarint((kModelNormalizerSpecField << 3) | 2, out);
    WriteVarint(spec.size(), out);
    out->append(spec);
  }
  return true;
}

bool ReadWholeFile(const char* path, std::string* contents, std::string* error) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    *error = std::string("cannot open SentencePiece model '") + path + "': " +
             std::strerror(errno);
    return false;
  }
  std::ostringstream buffer;
  buffer << in.rdbuf();
  *contents = buffer.str();
  return true;
}

bool ValidId(const FluteSpm* spm, int32_t id) {
  return spm != nullptr && id >= 0 && id < spm->processor.GetPieceSize();
}

}  // namespace

FLUTE_SPM_EXPORT int flute_spm_api_version(void) { return FLUTE_SPM_API_VERSION; }

FLUTE_SPM_EXPORT FluteSpm* flute_spm_create(const char* model_path, int disable_dummy_prefix,
                                           char** error) {
  try {
    std::string contents, message;
    if (!ReadWholeFile(model_path, &contents, &message)) {
      SetError(error, message);
      return nullptr;
    }
    auto* spm = new FluteSpm;
    std::string edited;
    if (!EditModelProto(contents, disable_dummy_prefix != 0, &edited,
                        &spm->model_add_dummy_prefix)) {
      delete spm;
      SetError(error, std::string("'") + model_path +
                          "' is not a SentencePiece model (malformed protobuf)");
      return nullptr;
    }
    const auto status = spm->processor.LoadFromSerializedProto(edited);
    if (!status.ok()) {
      delete spm;
      SetError(error, std::string("cannot load SentencePiece model '") + model_path +
                          "': " + status.ToString());
      return nullptr;
    }
    return spm;
  } catch (const std::exception& e) {
    SetError(error, std::string("SentencePiece failed to load '") + model_path + "': " + e.what());
    return nullptr;
  }
}

FLUTE_SPM_EXPORT void flute_spm_destroy(FluteSpm* spm) { delete spm; }

FLUTE_SPM_EXPORT void flute_spm_free(void* ptr) { std::free(ptr); }

FLUTE_SPM_EXPORT int flute_spm_encode(const FluteSpm* spm, const char* text, size_t text_len,
                                      int32_t** ids_out, size_t* num_ids, char** error) {
  *ids_out = nullptr;
  *num_ids = 0;
  try {
    std::vector<int> ids;
    const auto status = spm->processor.Encode(std::string_view(text, text_len), &ids);
    if (!status.ok()) {
      SetError(error, "SentencePiece encode failed: " + status.ToString());
      return -1;
    }
    if (ids.empty()) return 0;
    *ids_out = static_cast<int32_t*>(std::malloc(ids.size() * sizeof(int32_t)));
    if (*ids_out == nullptr) {
      SetError(error, "out of memory encoding text");
      return -1;
    }
    for (size_t i = 0; i < ids.size(); ++i) (*ids_out)[i] = ids[i];
    *num_ids = ids.size();
    return 0;
  } catch (const std::exception& e) {
    SetError(error, std::string("SentencePiece encode failed: ") + e.what());
    return -1;
  }
}

FLUTE_SPM_EXPORT int flute_spm_decode(const FluteSpm* spm, const int32_t* ids, size_t num_ids,
                                      char** text_out, size_t* text_len, char** error) {
  *text_out = nullptr;
  *text_len = 0;
  try {
    std::vector<int> id_vector(ids, ids + num_ids);
    for (int id : id_vector) {
      if (!ValidId(spm, id)) {
        SetError(error, "token id " + std::to_string(id) + " is outside the vocabulary [0, " +
                            std::to_string(spm->processor.GetPieceSize()) + ")");
        return -1;
      }
    }
    std::string text;
    const auto status = spm->processor.Decode(id_vector, &text);
    if (!status.ok()) {
      SetError(error, "SentencePiece decode failed: " + status.ToString());
      return -1;
    }
    *text_out = CopyToMalloc(text);
    if (*text_out == nullptr) {
      SetError(error, "out of memory decoding ids");
      return -1;
    }
    *text_len = text.size();
    return 0;
  } catch (const std::exception& e) {
    SetError(error, std::string("SentencePiece decode failed: ") + e.what());
    return -1;
  }
}

FLUTE_SPM_EXPORT const char* flute_spm_id_to_piece(const FluteSpm* spm, int32_t id, size_t* len) {
  if (!ValidId(spm, id)) {
    *len = 0;
    return nullptr;
  }
  const std::string& piece = spm->processor.IdToPiece(id);
  *len = piece.size();
  return piece.data();
}

FLUTE_SPM_EXPORT int32_t flute_spm_piece_to_id(const FluteSpm* spm, const char* piece, size_t len) {
  return spm->processor.PieceToId(std::string_view(piece, len));
}

FLUTE_SPM_EXPORT int32_t flute_spm_vocab_size(const FluteSpm* spm) {
  return spm->processor.GetPieceSize();
}
FLUTE_SPM_EXPORT int32_t flute_spm_bos_id(const FluteSpm* spm) { return spm->processor.bos_id(); }
FLUTE_SPM_EXPORT int32_t flute_spm_eos_id(const FluteSpm* spm) { return spm->processor.eos_id(); }
FLUTE_SPM_EXPORT int32_t flute_spm_unk_id(const FluteSpm* spm) { return spm->processor.unk_id(); }
FLUTE_SPM_EXPORT int32_t flute_spm_pad_id(const FluteSpm* spm) { return spm->processor.pad_id(); }

FLUTE_SPM_EXPORT int flute_spm_is_control(const FluteSpm* spm, int32_t id) {
  return ValidId(spm, id) && spm->processor.IsControl(id);
}
FLUTE_SPM_EXPORT int flute_spm_is_byte(const FluteSpm* spm, int32_t id) {
  return ValidId(spm, id) && spm->processor.IsByte(id);
}
FLUTE_SPM_EXPORT int flute_spm_is_unknown(const FluteSpm* spm, int32_t id) {
  return ValidId(spm, id) && spm->processor.IsUnknown(id);
}
FLUTE_SPM_EXPORT int flute_spm_is_unused(const FluteSpm* spm, int32_t id) {
  return ValidId(spm, id) && spm->processor.IsUnused(id);
}

FLUTE_SPM_EXPORT int flute_spm_model_add_dummy_prefix(const FluteSpm* spm) {
  return spm->model_add_dummy_prefix ? 1 : 0;
}
