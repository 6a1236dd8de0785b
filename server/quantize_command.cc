// `flute quantize`: writes a LUT-quantized copy of a dense checkpoint (engine/quantized_checkpoint.h).
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>

#include "absl/strings/str_format.h"
#include "engine/quantized_checkpoint.h"
#include "server/commands.h"

namespace flute::cli {
namespace {

// Progress on stderr: a redrawn bar with rate and ETA on a terminal, otherwise one plain
// line per tensor (for logs).
class ProgressReporter {
 public:
  ProgressReporter() : tty_(isatty(STDERR_FILENO) != 0), start_(std::chrono::steady_clock::now()) {}
  ~ProgressReporter() {
    if (tty_ && drew_) std::cerr << std::endl;
  }

  void Report(const QuantizeProgress& p) {
    if (p.stage == "calibrating") {
      ReportCalibration(p);
      return;
    }
    if (stage_ != p.stage) {
      stage_ = p.stage;
      start_ = std::chrono::steady_clock::now();
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    const double fraction = p.bytes_total > 0 ? static_cast<double>(p.bytes_done) / p.bytes_total : 1.0;
    const double rate_mb = seconds > 0.05 ? p.bytes_done / 1e6 / seconds : 0.0;
    const double eta = fraction > 0 ? seconds * (1.0 - fraction) / fraction : 0.0;
    if (tty_) {
      constexpr int kWidth = 30;
      const int filled = static_cast<int>(fraction * kWidth);
      std::cerr << absl::StrFormat("\r[%s%s] %5.1f%%  %.1f MB/s  ETA %s  %-48.48s", std::string(filled, '#'),
                                   std::string(kWidth - filled, '.'), 100 * fraction, rate_mb, Duration(eta),
                                   p.tensor)
                << std::flush;
      drew_ = true;
    } else {
      std::cerr << absl::StrFormat("quantize: %5.1f%% %.1f MB/s eta %s %s\n", 100 * fraction, rate_mb,
                                   Duration(eta), p.tensor);
    }
  }

 private:
  void ReportCalibration(const QuantizeProgress& p) {
    // bytes_done / bytes_total count projection groups here.
    const std::string line = absl::StrFormat("calibrating: projection group %d/%d", p.bytes_done, p.bytes_total);
    if (tty_) {
      std::cerr << "\r" << line << std::flush;
      if (p.bytes_done == p.bytes_total) std::cerr << std::endl;
    } else {
      std::cerr << line << "\n";
    }
  }

  static std::string Duration(double seconds) {
    const int s = static_cast<int>(seconds + 0.5);
    return absl::StrFormat("%d:%02d", s / 60, s % 60);
  }

  bool tty_;
  bool drew_ = false;
  std::string stage_;
  std::chrono::steady_clock::time_point start_;
};

absl::Status RunQuantize(const QuantizeOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  absl::Status status;
  {
    ProgressReporter reporter;  // ends its bar's line when it goes out of scope
    status = QuantizeCheckpoint(options, [&reporter](const QuantizeProgress& p) { reporter.Report(p); });
  }
  if (!status.ok()) return status;
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::cout << absl::StrFormat("wrote %s (%s, %d bits, group size %d) in %.1f s", options.output_dir, options.method,
                               options.bits, options.group_size, seconds)
            << std::endl;
  return absl::OkStatus();
}

}  // namespace

void AddQuantizeCommand(CLI::App& app) {
  auto o = std::make_shared<QuantizeOptions>();
  CLI::App* cmd = app.add_subcommand("quantize", "Write a LUT-quantized copy of a 16-bit checkpoint");
  cmd->add_option("--model", o->input_dir, "Input checkpoint directory (F32/F16/BF16)")->required();
  cmd->add_option("--out", o->output_dir, "Output directory")->required();
  cmd->add_option("--bits", o->bits, "Bits per weight: 2, 3 or 4");
  cmd->add_option("--group-size", o->group_size, "Inputs per scale: 32, 64, 128 or 256");
  cmd->add_option("--method", o->method, "nf | nfl | uniform | table:FILE (a JSON list of 2^bits numbers)");
  cmd->add_option("--calib-tokens", o->calib_tokens, "Calibration token file for nfl (not the evaluation text)");
  cmd->add_option("--calib-tokens-dtype", o->calib_tokens_dtype, "u16 or u32")
      ->check(CLI::IsMember({"u16", "u32"}));
  cmd->add_option("--calib-windows", o->calib_windows, "nfl: calibration windows of 512 tokens");
  cmd->add_flag("--quantize-lm-head", o->quantize_lm_head, "Quantize the LM head too");
  cmd->add_flag("--force", o->force, "Replace the output directory if it exists");
  cmd->callback([o] { ExitIfError(RunQuantize(*o)); });
}

}  // namespace flute::cli
