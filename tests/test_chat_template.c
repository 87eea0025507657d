/* test_chat_template.c — chat template detection and rendering against the
 * public templates of Llama 3 / 3.1, Qwen2 / 2.5, ChatML, Llama 2, Mistral
 * and Zephyr (typed in below). The expected strings are what the Jinja
 * templates render (trim_blocks + lstrip_blocks, add_generation_prompt=True,
 * as transformers renders them) for a 3-turn conversation without and with a
 * system message; the contents carry stray whitespace on purpose, since the
 * Llama templates strip it and the others keep it. */
#include "tokenizer/chat_template.h"
#include "test.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

struct chat_case {
    const char *name, *tmpl;
    enum lmc_chat_style style;
    const char *bos, *eos;
    const char *want;     /* user, assistant, user */
    const char *want_sys; /* system first; NULL: the template refuses it */
};

static const char tmpl_llama3[] =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n"
    "\n"
    "'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n"
    "\n"
    "' }}{% endif %}";
static const char tmpl_llama3_1[] =
    "{{- bos_token }}\n"
    "{%- if custom_tools is defined %}\n"
    "    {%- set tools = custom_tools %}\n"
    "{%- endif %}\n"
    "{%- if not tools_in_user_message is defined %}\n"
    "    {%- set tools_in_user_message = true %}\n"
    "{%- endif %}\n"
    "{%- if not date_string is defined %}\n"
    "    {%- set date_string = \"26 Jul 2024\" %}\n"
    "{%- endif %}\n"
    "{%- if not tools is defined %}\n"
    "    {%- set tools = none %}\n"
    "{%- endif %}\n"
    "\n"
    "{#- This block extracts the system message, so we can slot it into the right place. #}\n"
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {%- set system_message = messages[0]['content']|trim %}\n"
    "    {%- set messages = messages[1:] %}\n"
    "{%- else %}\n"
    "    {%- set system_message = \"\" %}\n"
    "{%- endif %}\n"
    "\n"
    "{#- System message + builtin tools #}\n"
    "{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}\n"
    "{%- if builtin_tools is defined or tools is not none %}\n"
    "    {{- \"Environment: ipython\\n\" }}\n"
    "{%- endif %}\n"
    "{%- if builtin_tools is defined %}\n"
    "    {{- \"Tools: \" + builtin_tools | reject('equalto', 'code_interpreter') | join(\", \") + \"\\n\\n\"}}\n"
    "{%- endif %}\n"
    "{{- \"Cutting Knowledge Date: December 2023\\n\" }}\n"
    "{{- \"Today Date: \" + date_string + \"\\n\\n\" }}\n"
    "{%- if tools is not none and not tools_in_user_message %}\n"
    "    {{- \"You have access to the following functions. To call a function, please respond with JSON for a function call.\" }}\n"
    "    {{- 'Respond in the format {\"name\": function name, \"parameters\": dictionary of argument name and its value}.' }}\n"
    "    {{- \"Do not use variables.\\n\\n\" }}\n"
    "    {%- for t in tools %}\n"
    "        {{- t | tojson(indent=4) }}\n"
    "        {{- \"\\n\\n\" }}\n"
    "    {%- endfor %}\n"
    "{%- endif %}\n"
    "{{- system_message }}\n"
    "{{- \"<|eot_id|>\" }}\n"
    "\n"
    "{#- Custom tools are passed in a user message with some extra guidance #}\n"
    "{%- if tools_in_user_message and not tools is none %}\n"
    "    {#- Extract the first user message so we can plug it in here #}\n"
    "    {%- if messages | length != 0 %}\n"
    "        {%- set first_user_message = messages[0]['content']|trim %}\n"
    "        {%- set messages = messages[1:] %}\n"
    "    {%- else %}\n"
    "        {{- raise_exception(\"Cannot put tools in the first user message when there's no first user message!\") }}\n"
    "{%- endif %}\n"
    "    {{- '<|start_header_id|>user<|end_header_id|>\\n\\n' -}}\n"
    "    {{- \"Given the following functions, please respond with a JSON for a function call \" }}\n"
    "    {{- \"with its proper arguments that best answers the given prompt.\\n\\n\" }}\n"
    "    {{- 'Respond in the format {\"name\": function name, \"parameters\": dictionary of argument name and its value}.' }}\n"
    "    {{- \"Do not use variables.\\n\\n\" }}\n"
    "    {%- for t in tools %}\n"
    "        {{- t | tojson(indent=4) }}\n"
    "        {{- \"\\n\\n\" }}\n"
    "    {%- endfor %}\n"
    "    {{- first_user_message + \"<|eot_id|>\"}}\n"
    "{%- endif %}\n"
    "\n"
    "{%- for message in messages %}\n"
    "    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}\n"
    "        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}\n"
    "    {%- elif 'tool_calls' in message %}\n"
    "        {%- if not message.tool_calls|length == 1 %}\n"
    "            {{- raise_exception(\"This model only supports single tool-calls at once!\") }}\n"
    "        {%- endif %}\n"
    "        {%- set tool_call = message.tool_calls[0].function %}\n"
    "        {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}\n"
    "        {{- '{\"name\": \"' + tool_call.name + '\", ' }}\n"
    "        {{- '\"parameters\": ' }}\n"
    "        {{- tool_call.arguments | tojson }}\n"
    "        {{- \"}\" }}\n"
    "        {{- \"<|eot_id|>\" }}\n"
    "    {%- elif message.role == \"tool\" or message.role == \"ipython\" %}\n"
    "        {{- \"<|start_header_id|>ipython<|end_header_id|>\\n\\n\" }}\n"
    "        {%- if message.content is mapping or message.content is iterable %}\n"
    "            {{- message.content | tojson }}\n"
    "        {%- else %}\n"
    "            {{- message.content }}\n"
    "        {%- endif %}\n"
    "        {{- \"<|eot_id|>\" }}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n"
    "{%- endif %}\n";
static const char tmpl_qwen2[] =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful assistant.<|im_end|>\n"
    "' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n"
    "' + message['content'] + '<|im_end|>' + '\n"
    "'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n"
    "' }}{% endif %}";
static const char tmpl_qwen2_5[] =
    "{%- if tools %}\n"
    "    {{- '<|im_start|>system\\n' }}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- messages[0]['content'] }}\n"
    "    {%- else %}\n"
    "        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}\n"
    "    {%- endif %}\n"
    "    {{- \"\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>\" }}\n"
    "    {%- for tool in tools %}\n"
    "        {{- \"\\n\" }}\n"
    "        {{- tool | tojson }}\n"
    "    {%- endfor %}\n"
    "    {{- \"\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\\"name\\\": <function-name>, \\\"arguments\\\": <args-json-object>}\\n</tool_call><|im_end|>\\n\" }}\n"
    "{%- else %}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n"
    "    {%- else %}\n"
    "        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endif %}\n"
    "{%- for message in messages %}\n"
    "    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) or (message.role == \"assistant\" and not message.tool_calls) %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
    "    {%- elif message.role == \"assistant\" %}\n"
    "        {{- '<|im_start|>' + message.role }}\n"
    "        {%- if message.content %}\n"
    "            {{- '\\n' + message.content }}\n"
    "        {%- endif %}\n"
    "        {%- for tool_call in message.tool_calls %}\n"
    "            {%- if tool_call.function is defined %}\n"
    "                {%- set tool_call = tool_call.function %}\n"
    "            {%- endif %}\n"
    "            {{- '\\n<tool_call>\\n{\"name\": \"' }}\n"
    "            {{- tool_call.name }}\n"
    "            {{- '\", \"arguments\": ' }}\n"
    "            {{- tool_call.arguments | tojson }}\n"
    "            {{- '}\\n</tool_call>' }}\n"
    "        {%- endfor %}\n"
    "        {{- '<|im_end|>\\n' }}\n"
    "    {%- elif message.role == \"tool\" %}\n"
    "        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != \"tool\") %}\n"
    "            {{- '<|im_start|>user' }}\n"
    "        {%- endif %}\n"
    "        {{- '\\n<tool_response>\\n' }}\n"
    "        {{- message.content }}\n"
    "        {{- '\\n</tool_response>' }}\n"
    "        {%- if loop.last or (messages[loop.index0 + 1].role != \"tool\") %}\n"
    "            {{- '<|im_end|>\\n' }}\n"
    "        {%- endif %}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "{%- endif %}\n";
static const char tmpl_chatml[] =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n"
    "' + message['content'] + '<|im_end|>' + '\n"
    "'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n"
    "' }}{% endif %}";
static const char tmpl_llama2[] =
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}";
static const char tmpl_mistral[] =
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}";
static const char tmpl_zephyr[] =
    "{% for message in messages %}\n"
    "{% if message['role'] == 'user' %}\n"
    "{{ '<|user|>\n"
    "' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'system' %}\n"
    "{{ '<|system|>\n"
    "' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'assistant' %}\n"
    "{{ '<|assistant|>\n"
    "'  + message['content'] + eos_token }}\n"
    "{% endif %}\n"
    "{% if loop.last and add_generation_prompt %}\n"
    "{{ '<|assistant|>' }}\n"
    "{% endif %}\n"
    "{% endfor %}";
static const char tmpl_phi3[] =
    "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\n"
    "' + message['content'] + '<|end|>\n"
    "'}}{% elif message['role'] == 'user' %}{{'<|user|>\n"
    "' + message['content'] + '<|end|>\n"
    "'}}{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n"
    "' + message['content'] + '<|end|>\n"
    "'}}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n"
    "' }}{% else %}{{ eos_token }}{% endif %}";
static const char tmpl_gemma[] =
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n"
    "' + message['content'] | trim + '<end_of_turn>\n"
    "' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n"
    "'}}{% endif %}";
static const struct chat_case cases[] = {
    {"llama3", tmpl_llama3, LMC_CHAT_LLAMA3, "<|begin_of_text|>", "<|eot_id|>",
     "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHello, who are you?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nI am an assistant.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
     "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello, who are you?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nI am an assistant.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"},
    {"llama3.1", tmpl_llama3_1, LMC_CHAT_LLAMA31, "<|begin_of_text|>", "<|eot_id|>",
     "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello, who are you?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nI am an assistant.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
     "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\nYou are terse.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello, who are you?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nI am an assistant.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"},
    {"qwen2", tmpl_qwen2, LMC_CHAT_CHATML_QWEN, "", "<|im_end|>",
     "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n  Hello, who are you?  <|im_end|>\n<|im_start|>assistant\n I am an assistant.\n<|im_end|>\n<|im_start|>user\nWhat is 2+2?\n<|im_end|>\n<|im_start|>assistant\n",
     "<|im_start|>system\n You are terse. <|im_end|>\n<|im_start|>user\n  Hello, who are you?  <|im_end|>\n<|im_start|>assistant\n I am an assistant.\n<|im_end|>\n<|im_start|>user\nWhat is 2+2?\n<|im_end|>\n<|im_start|>assistant\n"},
    {"qwen2.5", tmpl_qwen2_5, LMC_CHAT_CHATML_QWEN25, "", "<|im_end|>",
     "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\n  Hello, who are you?  <|im_end|>\n<|im_start|>assistant\n I am an assistant.\n<|im_end|>\n<|im_start|>user\nWhat is 2+2?\n<|im_end|>\n<|im_start|>assistant\n",
     "<|im_start|>system\n You are terse. <|im_end|>\n<|im_start|>user\n  Hello, who are you?  <|im_end|>\n<|im_start|>assistant\n I am an assistant.\n<|im_end|>\n<|im_start|>user\nWhat is 2+2?\n<|im_end|>\n<|im_start|>assistant\n"},
    {"chatml", tmpl_chatml, LMC_CHAT_CHATML, "<s>", "<|im_end|>",
     "<|im_start|>user\n  Hello, who are you?  <|im_end|>\n<|im_start|>assistant\n I am an assistant.\n<|im_end|>\n<|im_start|>user\nWhat is 2+2?\n<|im_end|>\n<|im_start|>assistant\n",
     "<|im_start|>system\n You are terse. <|im_end|>\n<|im_start|>user\n  Hello, who are you?  <|im_end|>\n<|im_start|>assistant\n I am an assistant.\n<|im_end|>\n<|im_start|>user\nWhat is 2+2?\n<|im_end|>\n<|im_start|>assistant\n"},
    {"llama2", tmpl_llama2, LMC_CHAT_LLAMA2, "<s>", "</s>",
     "<s>[INST] Hello, who are you? [/INST] I am an assistant. </s><s>[INST] What is 2+2? [/INST]",
     "<s>[INST] <<SYS>>\n You are terse. \n<</SYS>>\n\n  Hello, who are you? [/INST] I am an assistant. </s><s>[INST] What is 2+2? [/INST]"},
    {"mistral", tmpl_mistral, LMC_CHAT_MISTRAL, "<s>", "</s>",
     "<s>[INST]   Hello, who are you?   [/INST] I am an assistant.\n</s>[INST] What is 2+2?\n [/INST]",
     NULL},
    {"zephyr", tmpl_zephyr, LMC_CHAT_ZEPHYR, "<s>", "</s>",
     "<|user|>\n  Hello, who are you?  </s>\n<|assistant|>\n I am an assistant.\n</s>\n<|user|>\nWhat is 2+2?\n</s>\n<|assistant|>\n",
     "<|system|>\n You are terse. </s>\n<|user|>\n  Hello, who are you?  </s>\n<|assistant|>\n I am an assistant.\n</s>\n<|user|>\nWhat is 2+2?\n</s>\n<|assistant|>\n"},
};

static const struct lmc_chat_msg conv_sys[] = {
    {"system", " You are terse. "},
    {"user", "  Hello, who are you?  "},
    {"assistant", " I am an assistant.\n"},
    {"user", "What is 2+2?\n"},
};

static void test_cases(void) {
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct chat_case *c = &cases[i];
        enum lmc_chat_style st = LMC_CHAT_NONE;
        lmc_err err = {0};
        CHECK_MSG(lmc_chat_detect(c->tmpl, &st, &err) == LMC_OK, "%s: %s", c->name, err.msg);
        CHECK_MSG(st == c->style, "%s: detected %s", c->name, lmc_chat_style_name(st));
        for (int with_sys = 0; with_sys < 2; with_sys++) {
            const struct lmc_chat_msg *m = with_sys ? conv_sys : conv_sys + 1;
            int n = with_sys ? 4 : 3;
            const char *want = with_sys ? c->want_sys : c->want;
            char *out = NULL;
            lmc_status s = lmc_chat_render(st, m, n, c->bos, c->eos, &out, &err);
            if (!want) {
                CHECK_MSG(s == LMC_ERR_ARG && out == NULL, "%s: system message should be refused", c->name);
                continue;
            }
            CHECK_MSG(s == LMC_OK, "%s: %s", c->name, err.msg);
            CHECK_MSG(out && strcmp(out, want) == 0, "%s (system: %d):\n got: [%s]\nwant: [%s]", c->name, with_sys,
                      out ? out : "(null)", want);
            free(out);
        }
    }
}

static void test_unsupported_and_errors(void) {
    enum lmc_chat_style st = LMC_CHAT_LLAMA3;
    lmc_err err = {0};
    CHECK(lmc_chat_detect(NULL, &st, &err) == LMC_OK && st == LMC_CHAT_NONE);
    CHECK(lmc_chat_detect(tmpl_phi3, &st, &err) == LMC_ERR_UNSUPPORTED);
    CHECK_MSG(strstr(err.msg, "supported styles") && strstr(err.msg, "ChatML"), "%s", err.msg);
    CHECK(lmc_chat_detect(tmpl_gemma, &st, &err) == LMC_ERR_UNSUPPORTED);
    CHECK(lmc_chat_detect("{{ messages }}", &st, &err) == LMC_ERR_UNSUPPORTED);
    char *out = (char *)1;
    CHECK(lmc_chat_render(LMC_CHAT_NONE, conv_sys, 2, NULL, NULL, &out, &err) == LMC_ERR_UNSUPPORTED && !out);

    /* Llama 2 refuses roles that do not alternate */
    struct lmc_chat_msg two_users[] = {{"user", "a"}, {"user", "b"}};
    CHECK(lmc_chat_render(LMC_CHAT_LLAMA2, two_users, 2, NULL, NULL, &out, &err) == LMC_ERR_ARG && !out);
    CHECK_MSG(strstr(err.msg, "alternate") != NULL, "%s", err.msg);
    CHECK(lmc_chat_render(LMC_CHAT_MISTRAL, two_users, 2, NULL, NULL, &out, &err) == LMC_ERR_ARG);
    struct lmc_chat_msg no_content[] = {{"user", NULL}};
    CHECK(lmc_chat_render(LMC_CHAT_CHATML, no_content, 1, NULL, NULL, &out, &err) == LMC_ERR_ARG);

    /* NULL bos/eos fall back to the family's usual strings */
    CHECK(lmc_chat_render(LMC_CHAT_LLAMA2, conv_sys + 1, 1, NULL, NULL, &out, &err) == LMC_OK);
    CHECK(out && strcmp(out, "<s>[INST] Hello, who are you? [/INST]") == 0);
    free(out);
    CHECK(lmc_chat_render(LMC_CHAT_LLAMA3, conv_sys + 3, 1, NULL, NULL, &out, &err) == LMC_OK);
    CHECK(out && strcmp(out, "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
                             "<|start_header_id|>assistant<|end_header_id|>\n\n") == 0);
    free(out);
    /* an empty conversation renders only what the template writes outside the loop */
    CHECK(lmc_chat_render(LMC_CHAT_CHATML, NULL, 0, NULL, NULL, &out, &err) == LMC_OK);
    CHECK(out && strcmp(out, "<|im_start|>assistant\n") == 0);
    free(out);

    /* Llama 3.2 writes today's date */
    char t32[8192];
    snprintf(t32, sizeof t32, "%s", tmpl_llama3_1);
    char *p = strstr(t32, "{%- if not date_string is defined %}");
    CHECK(p != NULL);
    if (p) {
        const char *ins = "{%- if strftime_now is defined %}{%- set date_string = strftime_now(\"%d %b %Y\") %}{%- endif %}";
        memmove(p + strlen(ins), p, strlen(p) + 1);
        memcpy(p, ins, strlen(ins));
    }
    CHECK(lmc_chat_detect(t32, &st, &err) == LMC_OK && st == LMC_CHAT_LLAMA32);
    CHECK(lmc_chat_render(st, conv_sys, 4, "<|begin_of_text|>", "<|eot_id|>", &out, &err) == LMC_OK);
    char date[64], want[160];
    time_t now = time(NULL);
    struct tm tmv;
    localtime_r(&now, &tmv);
    strftime(date, sizeof date, "%d %b %Y", &tmv);
    snprintf(want, sizeof want, "Today Date: %s\n\nYou are terse.<|eot_id|>", date);
    CHECK_MSG(out && strstr(out, want) != NULL, "%s", out);
    free(out);
}

int main(void) {
    test_cases();
    test_unsupported_and_errors();
    return test_finish("test_chat_template");
}
