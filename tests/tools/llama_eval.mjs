// llama.cpp itself as the reference: loads a GGUF model through node-llama-cpp (the copy that
// tools/ggml_ref.sh installs), evaluates a fixed token sequence and prints, as one JSON document
// on stdout, the next-token probabilities after the last token and a few greedily generated
// tokens.
//
//   node tests/tools/llama_eval.mjs MODEL.gguf [--tokens 1,5,9] [--generate N] [--threads N]
//
// Output: {"model", "n_vocab", "tokens": [...], "probs": [p(token 0), ..., p(token n_vocab-1)],
//          "top": [[token, p], ...] (the 5 most likely), "generated": [token, ...],
//          "text": the generated tokens detokenized}.
// CPU only (no GPU, no download, no build), flash attention off and an F32 KV cache, so that the
// numbers are llama.cpp's plain f32 forward pass: tests/tools/llama_ref.py computes the same in
// numpy. Probabilities are sampled at temperature 1 with top-k, top-p and min-p off: that is the
// softmax of the logits. Exit 2 when node-llama-cpp is missing or the arguments are wrong, 1 when
// llama.cpp refuses the model.
import { existsSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

function usage(msg) {
    process.stderr.write(`llama_eval: ${msg}\n` +
        "usage: node llama_eval.mjs MODEL.gguf [--tokens 1,5,9] [--generate N] [--threads N]\n");
    process.exit(2);
}

const args = process.argv.slice(2);
let model = null, tokens = [1, 3, 10, 100, 200, 255, 258], generate = 4, threads = 1;
for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === "--tokens") tokens = (args[++i] ?? "").split(",").map(Number);
    else if (a === "--generate") generate = Number(args[++i]);
    else if (a === "--threads") threads = Number(args[++i]);
    else if (a.startsWith("--")) usage(`unknown option ${a}`);
    else if (model === null) model = a;
    else usage("one MODEL only");
}
if (model === null) usage("no MODEL");
if (!tokens.length || tokens.some((t) => !Number.isInteger(t) || t < 0)) usage("bad --tokens");
if (!Number.isInteger(generate) || generate < 0) usage("bad --generate");

// The same directory as tools/ggml_ref.sh: $SMELT_GGML_CACHE, or the XDG cache.
const cache = process.env.SMELT_GGML_CACHE ||
    join(process.env.XDG_CACHE_HOME || join(homedir(), ".cache"), "smelt", "node-llama-cpp-3.21.1");
const entry = join(cache, "node_modules", "node-llama-cpp", "dist", "index.js");
if (!existsSync(entry)) {
    process.stderr.write(`llama_eval: node-llama-cpp is not installed at ${entry} (run tools/setup.sh)\n`);
    process.exit(2);
}
const { getLlama, LlamaLogLevel } = await import(pathToFileURL(entry).href);

const llama = await getLlama({ gpu: false, build: "never", skipDownload: true,
                               logLevel: LlamaLogLevel.error });
let m;
try {
    m = await llama.loadModel({ modelPath: model, gpuLayers: 0 });
} catch (e) {
    process.stderr.write(`llama_eval: llama.cpp cannot load ${model}: ${e.message}\n`);
    process.exit(1);
}
const context = await m.createContext({
    contextSize: Math.max(64, tokens.length + generate + 8),
    batchSize: Math.max(64, tokens.length + generate + 8),
    threads,
    flashAttention: false,
    experimentalKvCacheKeyType: "F32",
    experimentalKvCacheValueType: "F32",
});
const seq = context.getSequence();
const last = tokens.length - 1;
const plain = { temperature: 1, topK: 0, topP: 1, minP: 0, seed: 1 };
const input = tokens.map((t, i) => i === last
    ? [t, { generateNext: { probabilities: true, options: plain } }] : t);
const res = await seq.controlledEvaluate(input);
const probsMap = res[last]?.next?.probabilities;
if (!probsMap) {
    process.stderr.write("llama_eval: no probabilities came back\n");
    process.exit(1);
}
// Nothing truncates the list, so every token of the vocabulary has an entry.
let n = 0;
for (const tok of probsMap.keys()) n = Math.max(n, tok + 1);
const probs = new Array(n).fill(0);
for (const [tok, p] of probsMap) probs[tok] = p;
const top = [...probsMap.entries()].slice(0, 5);

// A few greedy tokens after the sequence, in a fresh sequence state.
await seq.clearHistory();
const generated = [];
if (generate > 0) {
    for await (const t of seq.evaluate(tokens, { temperature: 0, yieldEogToken: true })) {
        generated.push(t);
        if (generated.length >= generate) break;
    }
}
const text = m.detokenize(generated);
process.stdout.write(JSON.stringify({ model, n_vocab: n, tokens, probs, top, generated, text }) + "\n");
await context.dispose();
await m.dispose();
await llama.dispose();
process.exit(0);
