// webqlora public API, identical in Node and browsers. Node-only helpers (file paths, Dawn) are
// added by src/node.ts.
export { WebqloraError } from './errors.ts';
export * from './io/source.ts';
export * from './num.ts';
export * from './io/dtype.ts';
export * from './quant/types.ts';
export { quantize4bit, dequantize4bit, doubleQuantize, effectiveAbsmax, quantizeBlockwise8, dequantizeBlockwise8 } from './quant/quantize.ts';
export * from './model/config.ts';
export type * from './io/weights.ts';
export { VERSION } from './version.ts';
export { createReferenceBackend, type ReferenceBackend } from './backend/reference/index.ts';
export { createWasmBackend } from './backend/wasm/index.ts';
export { openSafetensors, writeSafetensors, serializeSafetensors, planSafetensors, SafetensorsFile, type SafetensorsEntry, type SafetensorsTensorInfo } from './io/safetensors.ts';
export { openHfDir, type HfWeightSource, type QuantInfo } from './io/hf.ts';
export { writeBnbModel, readBnbWeights, bnbTensorEntries, quantStateJson, parseQuantState, pythonFloatRepr, bnbQuantizationConfig, dequantizeToDtype, type BnbWriteOptions, type BnbWriteResult, type BnbQuantType } from './io/bnb.ts';
export { openModel } from './io/open.ts';
export * from './data/index.ts';
export { openGguf, readGguf, readGgufTensor, GgufType, ggmlTypeName, type GgufFile, type GgufTensorInfo, type GgufValue, type GgufArray } from './io/gguf.ts';
export { writeGgufFile, writeGgufModel, vocabMetadata, type GgufDtype, type GgufModelOptions, type MetaValue } from './io/gguf-write.ts';
export { readGgufAdapter, writeGgufAdapter, type AdapterDtype } from './model/gguf-adapter.ts';
export { hfTokenizerFiles } from './tokenizer/export.ts';
export { vocabFromHfDir } from './tokenizer/to-gguf.ts';
export { openLlama2c } from './io/llama2c.ts';
export { DecodeStream, type Tokenizer, type EncodeOptions, type DecodeOptions } from './tokenizer/tokenizer.ts';
export { tokenizerFromVocab, tokenizerFromGguf, tokenizerFromJson, tokenizerFromSentencePiece, loadTokenizerFromDir, loadChatTemplate, chatTemplateFromConfig, vocabFromLlama2cBin, type TokenizerConfig } from './tokenizer/load.ts';
export { SpmTokenizer, parseSentencePieceModel, type SpmModel } from './tokenizer/spm.ts';
export { HfJsonTokenizer } from './tokenizer/hf.ts';
// Training, generation and the demo: DESIGN.md's library API, so the browser bundle can do what
// the CLI does (examples/browser/ and test/browser/ use exactly these names).
export { createBackend, type BackendChoice, type CreateBackendOptions } from './backend/index.ts';
export type { Backend, Tensor, QuantWeight, MemoryStats } from './backend/backend.ts';
export { loadModel, ownsSource, type LoadOptions } from './model/load.ts';
export type { LlamaModel } from './model/llama.ts';
export { LoraAdapters, DEFAULT_LORA, parseTargets, resolveModules, type LoraConfig, type LoraModule, type LoraPair, type LoraParam } from './model/lora.ts';
export { FAMILIES, familyNames } from './model/families.ts';
export { configFromHf, configToHf } from './io/hf-config.ts';
export { saveAdapter, loadAdapter, adapterConfigJson, ADAPTER_CONFIG, ADAPTER_WEIGHTS } from './model/peft.ts';
export { mergeAdapter, type MergeOptions } from './model/merge.ts';
export { Trainer, TRAIN_DEFAULTS, type TrainOptions, type StepRecord, type OptimizerName, type MicroBatchSource } from './train/trainer.ts';
export { lossCurveSvg } from './train/svg.ts';
export { PreferenceObjective, evaluatePreference, pairTerms, TRAIN_METHODS, DEFAULT_BETA, type TrainMethod, type PreferenceMethod, type PreferenceMetrics } from './train/preference.ts';
export { loadPreferenceDataset, loadPreferenceTrainValid, PreferenceBatcher, preferenceEvalBatches, type PreferencePair, type PreferenceDataset, type LoadPreferenceOptions } from './data/preference.ts';
export { generate, type GenerateOptions, type GenerateResult } from './generate/generate.ts';
export { SampleRng } from './generate/sample.ts';
export { evaluate, type EvalResult } from './eval/evaluate.ts';
export { runDemo, DEMO_PROMPTS, type DemoOptions, type DemoResult } from './demo/run.ts';
export { demoStories, demoJsonl } from './demo/data.ts';
export { saveCheckpoint, restoreCheckpoint, readTrainerState, type TrainerState } from './train/checkpoint.ts';
export { syntheticSource, syntheticFromConfig, SYNTHETIC_CONFIGS } from './model/synthetic.ts';
export { LayerPager, Workspace } from './model/llama.ts';
// How a wasm backend runs (threads, kernel variant): shown by the browser demo page.
export { wasmBackendInfo, type WasmBackendInfo } from './backend/wasm/index.ts';
