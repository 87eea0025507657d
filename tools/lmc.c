/* lmc.c — the lmc command-line tool: dispatches to one command per file. */
#include "cli.h"

#include <stdio.h>
#include <string.h>

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} commands[] = {
    {"generate", cmd_generate, "generate -m DIR|FILE.gguf -p TEXT [-n N] [--temp T] ...  continue a prompt"},
    {"chat", cmd_chat, "chat -m DIR [--chat-template FILE]               interactive chat"},
    {"chat-template", cmd_chat_template, "chat-template -m DIR --messages F.json [--tools F.json] [--add-generation-prompt] [--template FILE] [--now YYYY-MM-DD]  print the prompt"},
    {"tokenize", cmd_tokenize, "tokenize -m DIR --text TEXT [--add-special]     print ids as JSON"},
    {"detokenize", cmd_detokenize, "detokenize -m DIR --ids 1,2,3                  print text"},
    {"eval", cmd_eval, "eval -m DIR|FILE.gguf --text-file F | --text T [--ctx N] [--chunks] [--kl-base DIR] [--pp N]  perplexity (KL vs a base)"},
    {"info", cmd_info, "info -m DIR [--ctx N] [--tensors] [--zero S --world N] [--optim X ...] [--tp T --pp P --cp C --seq N --fits GIB] [--qlora nf4|int4] [--acts --seq N --batch B]  model summary; tensor table; ZeRO, optimizer, model-parallel, QLoRA-base and training-activation memory"},
    {"serve", cmd_serve, "serve -m DIR [--host H] [--port P] [--api-key K] ...  OpenAI-compatible HTTP server"},
    {"bench-serve", cmd_bench_serve, "bench-serve --url URL [--concurrency C] [--requests N] ...  load a server"},
    {"parity", cmd_parity, "parity DIR|FILE.gguf [--ref DIR] [--dtype fp32|bf16] [--json]  check against references"},
    {"train-tokenizer", cmd_train_tokenizer, "train-tokenizer --text-file F --vocab N --style gpt2|llama3 -o DIR  byte-level BPE"},
    {"prepare-data", cmd_prepare_data, "prepare-data -m DIR --text-file F [--jsonl --field text] -o DATA  token shards"},
    {"rl", cmd_rl, "rl -m POLICY --tasks FILE.jsonl -o OUT [--algo grpo|ppo] [--group 8] ...  RL from verifiable rewards (CPU)"},
    {"train", cmd_train, "train --data DATA -o OUT (-m DIR | --arch llama|gpt2 ... | --resume CKPT) ...  train on the CPU"},
    {"convert-checkpoint", cmd_convert_checkpoint, "convert-checkpoint CKPT -o OUT                  sharded ZeRO checkpoint -> model.safetensors"},
    {"comm-bench", cmd_comm_bench, "comm-bench [--sizes N,N] [--iters K] [--device cpu|cuda]  check and time the collectives (mpirun/torchrun)"},
    {"finetune", cmd_finetune, "finetune -m BASE --data F.jsonl -o OUT [--lora-r N --pack --full ...]  SFT (LoRA or full)"},
    {"merge", cmd_merge, "merge -m BASE --lora DIR[:SCALE] -o OUT          fold LoRA adapters into the weights"},
    {"convert", cmd_convert, "convert -m DIR -o OUT|FILE.gguf --dtype bf16|f16|f32|q8_0|q4_0  rewrite weights (or write GGUF)"},
    {"quantize", cmd_quantize, "quantize -m DIR -o OUT --method rtn|gptq|nf4|ternary ...  write a quantized HF folder"},
    {"plot", cmd_plot, "plot METRICS.jsonl -o curve.svg [--metric loss,val_loss] [--log]  SVG loss curves"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: lmc COMMAND [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        fprintf(f, "  %s\n", commands[i].help);
    fprintf(f, "\ncommon options: -m DIR, --threads N, --ctx N, --dtype fp32|bf16|f16, "
               "--device cpu|cuda, --json, --lora DIR[:SCALE]\n");
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "lmc: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
