// Runs the C array of an exported edgeseg model on TensorFlow Lite for Microcontrollers, on the
// host, as the firmware in docs/microcontrollers.md does: one RGB tile in, int8 scores out.
//
//   edgeseg_tflm_host TILE.rgb OUT_SCORES.int8 [OUT_INPUT.int8]
//
// TILE.rgb: EDGESEG_INPUT_HEIGHT x EDGESEG_INPUT_WIDTH x EDGESEG_INPUT_CHANNELS bytes, row-major
// RGB. The tile is normalised and quantised with the header's constants, run once, and the
// output tensor's int8 bytes are written to OUT_SCORES (NHWC); OUT_INPUT receives the
// quantised input tensor. Prints the model's size, the arena used and the class histogram.
//
// Build: compile with the generated model .cc, the header's directory on the include path,
// EDGESEG_MODEL_HEADER naming the header ("model.h"), EDGESEG_OPS_INC naming a file of
// resolver calls (one `resolver.AddXxx();` per operator the header lists) and
// EDGESEG_ARENA_BYTES the arena to try; link libtensorflow-microlite.a.

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include EDGESEG_MODEL_HEADER
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_log.h"
#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"
#include "tensorflow/lite/micro/system_setup.h"
#include "tensorflow/lite/schema/schema_generated.h"

#ifndef EDGESEG_ARENA_BYTES
#define EDGESEG_ARENA_BYTES (8 * 1024 * 1024)
#endif

namespace {

constexpr size_t kArenaSize = EDGESEG_ARENA_BYTES;
alignas(16) uint8_t g_arena[kArenaSize];

bool ReadFile(const char* path, std::vector<uint8_t>* out, size_t expected) {
  FILE* f = std::fopen(path, "rb");
  if (f == nullptr) return false;
  out->resize(expected + 1);
  const size_t n = std::fread(out->data(), 1, expected + 1, f);
  std::fclose(f);
  out->resize(n);
  return n == expected;
}

bool WriteFile(const char* path, const void* data, size_t size) {
  FILE* f = std::fopen(path, "wb");
  if (f == nullptr) return false;
  const bool ok = std::fwrite(data, 1, size, f) == size;
  return std::fclose(f) == 0 && ok;
}

int Fail(const char* what) {
  std::fprintf(stderr, "edgeseg_tflm_host: %s\n", what);
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3 || argc > 4) {
    std::fprintf(stderr, "usage: %s TILE.rgb OUT_SCORES.int8 [OUT_INPUT.int8]\n", argv[0]);
    return 2;
  }
  tflite::InitializeTarget();
  const tflite::Model* model = tflite::GetModel(g_edgeseg_model);
  if (model->version() != TFLITE_SCHEMA_VERSION) return Fail("schema version mismatch");

  using Resolver = tflite::MicroMutableOpResolver<EDGESEG_NUM_OPS>;
  static Resolver resolver;
#include EDGESEG_OPS_INC

  static tflite::MicroInterpreter interpreter(model, resolver, g_arena, kArenaSize);
  if (interpreter.AllocateTensors() != kTfLiteOk) return Fail("AllocateTensors failed");

  TfLiteTensor* in = interpreter.input(0);
  TfLiteTensor* out = interpreter.output(0);
  const int n_in = EDGESEG_INPUT_HEIGHT * EDGESEG_INPUT_WIDTH * EDGESEG_INPUT_CHANNELS;
  const int pixels = EDGESEG_OUTPUT_HEIGHT * EDGESEG_OUTPUT_WIDTH;
  const int n_out = pixels * EDGESEG_NUM_CLASSES;
  if (in->type != kTfLiteInt8 || out->type != kTfLiteInt8) return Fail("input/output not int8");
  if (static_cast<int>(in->bytes) != n_in || static_cast<int>(out->bytes) != n_out) {
    return Fail("tensor sizes differ from the header's");
  }

  std::vector<uint8_t> rgb;
  if (!ReadFile(argv[1], &rgb, n_in)) return Fail("cannot read a tile of the input's size");
  // docs/microcontrollers.md: normalise, then quantise, in float32 and rounding halves to
  // even (lrintf in the default rounding mode) as edgeseg-run does: with mean and std 127.5
  // and scale 1/127.5 every value lands on a half, where lround would round the other way.
  for (int i = 0; i < n_in; ++i) {
    const float x = (rgb[i] - EDGESEG_MEAN) / EDGESEG_STD;
    const long q = std::lrint(x / EDGESEG_INPUT_SCALE) + EDGESEG_INPUT_ZERO_POINT;
    in->data.int8[i] = static_cast<int8_t>(q < -128 ? -128 : q > 127 ? 127 : q);
  }
  if (argc == 4 && !WriteFile(argv[3], in->data.int8, n_in)) return Fail("cannot write input");

  if (interpreter.Invoke() != kTfLiteOk) return Fail("Invoke failed");
  if (!WriteFile(argv[2], out->data.int8, n_out)) return Fail("cannot write the scores");

  int histogram[EDGESEG_NUM_CLASSES] = {};
  for (int p = 0; p < pixels; ++p) {  // argmax of the int8 scores
    const int8_t* s = out->data.int8 + p * EDGESEG_NUM_CLASSES;
    int best = 0;
    for (int k = 1; k < EDGESEG_NUM_CLASSES; ++k) best = s[k] > s[best] ? k : best;
    ++histogram[best];
  }
  std::printf("model_bytes %u\n", g_edgeseg_model_len);
  std::printf("arena_used_bytes %u\n", static_cast<unsigned>(interpreter.arena_used_bytes()));
  std::printf("arena_given_bytes %u\n", static_cast<unsigned>(kArenaSize));
  std::printf("mask_histogram");
  for (int k = 0; k < EDGESEG_NUM_CLASSES; ++k) {
    std::printf(" %s=%d", g_edgeseg_class_names[k], histogram[k]);
  }
  std::printf("\n");
  return 0;
}
