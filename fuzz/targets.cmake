# The libFuzzer targets, one fuzz/<name>.c each (fuzz/CMakeLists.txt builds
# them with -fsanitize=fuzzer under DMS_FUZZ; tests/CMakeLists.txt replays
# their seed corpus and regression inputs in the normal test suite).
set(DMS_FUZZ_TARGETS
  safetensors safetensors_index gguf tokenizer chat_template model_config train_config
  prep_jsonl shard checkpoint model_load eval_data)
