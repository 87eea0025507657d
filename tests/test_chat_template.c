/* test_chat_template.c — chat templates through the one rendering path
 * (the Jinja engine): the public templates of Llama 3 / 3.1, Qwen2 / 2.5,
 * ChatML, Llama 2, Mistral and Zephyr (typed in below; the expected strings
 * are transformers' renderings with add_generation_prompt=True) for a
 * 3-turn conversation without and with a system message, with stray
 * whitespace on purpose; refusals with the template's own message; and
 * loading from a model folder: tokenizer_config.json's chat_template as a
 * string or a list of named templates (tool_use chosen when tools are
 * given), chat_template.jinja, an explicit file, special tokens given as
 * AddedToken objects, extra variables, turn stop strings, and the
 * `lmc chat-template` command (its --now date). */
#include "core/core.h"
#include "tokenizer/chat_template.h"
#include "test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct chat_case {
    const char *name, *tmpl;
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
    {"llama3", tmpl_llama3, "<|begin_of_text|>", "<|eot_id|>",
     "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHello, who are you?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nI am an assistant.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
     "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello, who are you?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nI am an assistant.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"},
    {"llama3.1", tmpl_llama3_1, "<|begin_of_text|>", "<|eot_id|>",
     "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello, who are you?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nI am an assistant.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
     "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\nYou are terse.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello, who are you?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nI am an assistant.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"},
    {"qwen2", tmpl_qwen2, "", "<|im_end|>",
     "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n  Hello, who are you?  <|im_end|>\n<|im_start|>assistant\n I am an assistant.\n<|im_end|>\n<|im_start|>user\nWhat is 2+2?\n<|im_end|>\n<|im_start|>assistant\n",
     "<|im_start|>system\n You are terse. <|im_end|>\n<|im_start|>user\n  Hello, who are you?  <|im_end|>\n<|im_start|>assistant\n I am an assistant.\n<|im_end|>\n<|im_start|>user\nWhat is 2+2?\n<|im_end|>\n<|im_start|>assistant\n"},
    {"qwen2.5", tmpl_qwen2_5, "", "<|im_end|>",
     "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\n  Hello, who are you?  <|im_end|>\n<|im_start|>assistant\n I am an assistant.\n<|im_end|>\n<|im_start|>user\nWhat is 2+2?\n<|im_end|>\n<|im_start|>assistant\n",
     "<|im_start|>system\n You are terse. <|im_end|>\n<|im_start|>user\n  Hello, who are you?  <|im_end|>\n<|im_start|>assistant\n I am an assistant.\n<|im_end|>\n<|im_start|>user\nWhat is 2+2?\n<|im_end|>\n<|im_start|>assistant\n"},
    {"chatml", tmpl_chatml, "<s>", "<|im_end|>",
     "<|im_start|>user\n  Hello, who are you?  <|im_end|>\n<|im_start|>assistant\n I am an assistant.\n<|im_end|>\n<|im_start|>user\nWhat is 2+2?\n<|im_end|>\n<|im_start|>assistant\n",
     "<|im_start|>system\n You are terse. <|im_end|>\n<|im_start|>user\n  Hello, who are you?  <|im_end|>\n<|im_start|>assistant\n I am an assistant.\n<|im_end|>\n<|im_start|>user\nWhat is 2+2?\n<|im_end|>\n<|im_start|>assistant\n"},
    {"llama2", tmpl_llama2, "<s>", "</s>",
     "<s>[INST] Hello, who are you? [/INST] I am an assistant. </s><s>[INST] What is 2+2? [/INST]",
     "<s>[INST] <<SYS>>\n You are terse. \n<</SYS>>\n\n  Hello, who are you? [/INST] I am an assistant. </s><s>[INST] What is 2+2? [/INST]"},
    {"mistral", tmpl_mistral, "<s>", "</s>",
     "<s>[INST]   Hello, who are you?   [/INST] I am an assistant.\n</s>[INST] What is 2+2?\n [/INST]",
     NULL},
    {"zephyr", tmpl_zephyr, "<s>", "</s>",
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
        lmc_err err = {0};
        struct lmc_chat_template *ct = NULL;
        CHECK_MSG(lmc_chat_template_new(c->tmpl, c->bos, c->eos, &ct, &err) == LMC_OK, "%s: %s", c->name, err.msg);
        if (!ct) continue;
        for (int with_sys = 0; with_sys < 2; with_sys++) {
            const struct lmc_chat_msg *m = with_sys ? conv_sys : conv_sys + 1;
            int n = with_sys ? 4 : 3;
            const char *want = with_sys ? c->want_sys : c->want;
            char *out = NULL;
            lmc_status s = lmc_chat_template_render_msgs(ct, m, n, &out, &err);
            if (!want) {
                CHECK_MSG(s != LMC_OK && out == NULL, "%s: system message should be refused", c->name);
                CHECK_MSG(strstr(err.msg, "TemplateError: ") == err.msg, "%s: %s", c->name, err.msg);
                continue;
            }
            CHECK_MSG(s == LMC_OK, "%s: %s", c->name, err.msg);
            CHECK_MSG(out && strcmp(out, want) == 0, "%s (system: %d):\n got: [%s]\nwant: [%s]", c->name, with_sys,
                      out ? out : "(null)", want);
            free(out);
        }
        const char *stops[LMC_CHAT_MAX_TURN_STOPS];
        int ns = lmc_chat_template_turn_stops(ct, stops);
        CHECK_MSG(ns >= 1 && !strcmp(stops[ns - 1], c->eos), "%s: %d stops", c->name, ns);
        lmc_chat_template_free(ct);
    }
}

static lmc_status render1(const char *tmpl, const struct lmc_chat_msg *m, int n, char **out, lmc_err *err) {
    struct lmc_chat_template *ct = NULL;
    *out = NULL;
    lmc_status st = lmc_chat_template_new(tmpl, "<s>", "</s>", &ct, err);
    if (!st) st = lmc_chat_template_render_msgs(ct, m, n, out, err);
    lmc_chat_template_free(ct);
    return st;
}

static void test_refusals(void) {
    lmc_err err = {0};
    char *out = NULL;
    /* templates the old recogniser refused now render */
    CHECK(render1(tmpl_phi3, conv_sys + 1, 3, &out, &err) == LMC_OK);
    CHECK(out && !strcmp(out, "<|user|>\n  Hello, who are you?  <|end|>\n<|assistant|>\n I am an assistant.\n<|end|>\n"
                              "<|user|>\nWhat is 2+2?\n<|end|>\n<|assistant|>\n"));
    free(out);
    CHECK(render1(tmpl_gemma, conv_sys + 1, 3, &out, &err) == LMC_OK);
    CHECK(out && !strcmp(out, "<s><start_of_turn>user\nHello, who are you?<end_of_turn>\n<start_of_turn>model\n"
                              "I am an assistant.<end_of_turn>\n<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n"
                              "<start_of_turn>model\n"));
    free(out);
    /* and refuse what the template refuses, in its words */
    CHECK(render1(tmpl_gemma, conv_sys, 4, &out, &err) != LMC_OK && !out);
    CHECK_MSG(!strcmp(err.msg, "TemplateError: System role not supported"), "%s", err.msg);
    struct lmc_chat_msg two_users[] = {{"user", "a"}, {"user", "b"}};
    CHECK(render1(tmpl_llama2, two_users, 2, &out, &err) != LMC_OK);
    CHECK_MSG(strstr(err.msg, "alternate") != NULL, "%s", err.msg);
    struct lmc_chat_msg no_content[] = {{"user", NULL}};
    CHECK(render1(tmpl_chatml, no_content, 1, &out, &err) == LMC_ERR_ARG);
    /* an empty conversation renders only what the template writes outside the loop */
    CHECK(render1(tmpl_chatml, NULL, 0, &out, &err) == LMC_OK);
    CHECK(out && strcmp(out, "<|im_start|>assistant\n") == 0);
    free(out);
    /* a template that does not parse is an error naming the line */
    struct lmc_chat_template *ct = NULL;
    CHECK(lmc_chat_template_new("a\n{% if %}", NULL, NULL, &ct, &err) == LMC_ERR_FORMAT && !ct);
    CHECK_MSG(strstr(err.msg, "line 2") != NULL, "%s", err.msg);
}

static void write_file(const char *dir, const char *name, const char *text) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

static char *render_dir(const char *dir, const char *file, const char *msgs, const char *tools, const char *kwargs,
                        lmc_err *err) {
    struct lmc_chat_template *ct = NULL;
    char *out = NULL;
    cJSON *m = cJSON_Parse(msgs), *t = tools ? cJSON_Parse(tools) : NULL, *k = kwargs ? cJSON_Parse(kwargs) : NULL;
    struct lmc_chat_render_opts o = {.tools = t, .kwargs = k, .add_generation_prompt = true,
                                     .now_year = 2026, .now_month = 12, .now_day = 5};
    if (!lmc_chat_template_load(dir, file, NULL, &ct, err)) lmc_chat_template_render(ct, m, &o, &out, err);
    lmc_chat_template_free(ct);
    cJSON_Delete(m);
    cJSON_Delete(t);
    cJSON_Delete(k);
    return out;
}

static void test_loading(void) {
    char dir[] = "/tmp/lmc_chat_template_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    lmc_err err = {0};
    const char *msgs = "[{\"role\":\"user\",\"content\":\"hi\"}]";
    /* no template at all */
    struct lmc_chat_template *ct = NULL;
    CHECK(lmc_chat_template_load(dir, NULL, NULL, &ct, &err) == LMC_ERR_UNSUPPORTED && !ct);
    CHECK_MSG(strstr(err.msg, "--chat-template") != NULL, "%s", err.msg);
    /* a string template; special tokens as strings and AddedToken objects; every *_token passed */
    write_file(dir, "tokenizer_config.json",
               "{\"bos_token\": {\"content\": \"<B>\", \"lstrip\": false}, \"eos_token\": \"<E>\", "
               "\"pad_token\": \"<P>\", \"model_max_length\": 8, "
               "\"chat_template\": \"{{ bos_token }}{% for m in messages %}{{ m.content }}{{ eos_token }}{% endfor %}"
               "{{ pad_token }}{{ tools | length if tools else 'none' }}{{ documents }}"
               "{% if enable_thinking is defined %}T{{ enable_thinking }}{% endif %}"
               "{% if add_generation_prompt %}>{% endif %}{{ strftime_now('%Y') }}\"}");
    char *out = render_dir(dir, NULL, msgs, NULL, NULL, &err);
    CHECK_MSG(out && !strcmp(out, "<B>hi<E><P>noneNone>2026"), "%s", out ? out : err.msg);
    free(out);
    out = render_dir(dir, NULL, msgs, "[{\"type\":\"function\"}]", "{\"enable_thinking\": false}", &err);
    CHECK_MSG(out && !strcmp(out, "<B>hi<E><P>1NoneTFalse>2026"), "%s", out ? out : err.msg);
    free(out);
    /* a list of named templates: tool_use when tools are given */
    write_file(dir, "tokenizer_config.json",
               "{\"eos_token\": \"<|im_end|>\", \"chat_template\": [{\"name\": \"default\", \"template\": \"D\"}, "
               "{\"name\": \"tool_use\", \"template\": \"T{{ tools[0].name }}<|im_end|>\"}]}");
    out = render_dir(dir, NULL, msgs, NULL, NULL, &err);
    CHECK_MSG(out && !strcmp(out, "D"), "%s", out ? out : err.msg);
    free(out);
    out = render_dir(dir, NULL, msgs, "[{\"name\": \"f\"}]", NULL, &err);
    CHECK_MSG(out && !strcmp(out, "Tf<|im_end|>"), "%s", out ? out : err.msg);
    free(out);
    CHECK(lmc_chat_template_load(dir, NULL, NULL, &ct, &err) == LMC_OK);
    const char *stops[LMC_CHAT_MAX_TURN_STOPS];
    CHECK(lmc_chat_template_turn_stops(ct, stops) == 1 && !strcmp(stops[0], "<|im_end|>"));
    lmc_chat_template_free(ct);
    /* chat_template.jinja beside it wins, as in transformers; an explicit file wins over both */
    write_file(dir, "chat_template.jinja", "J{{ messages[0].content }}\n");
    out = render_dir(dir, NULL, msgs, NULL, NULL, &err);
    CHECK_MSG(out && !strcmp(out, "Jhi"), "%s", out ? out : err.msg);
    free(out);
    /* additional_chat_templates/NAME.jinja beside it: tool_use from there */
    char sub[600], file[700];
    snprintf(sub, sizeof sub, "%s/additional_chat_templates", dir);
    CHECK(mkdir(sub, 0700) == 0);
    write_file(sub, "tool_use.jinja", "U{{ tools | length }}");
    out = render_dir(dir, NULL, msgs, "[1, 2]", NULL, &err);
    CHECK_MSG(out && !strcmp(out, "U2"), "%s", out ? out : err.msg);
    free(out);
    out = render_dir(dir, NULL, msgs, NULL, NULL, &err);
    CHECK_MSG(out && !strcmp(out, "Jhi"), "%s", out ? out : err.msg);
    free(out);
    snprintf(file, sizeof file, "%s/tool_use.jinja", sub);
    unlink(file);
    rmdir(sub);
    snprintf(file, sizeof file, "%s/mine.jinja", dir);
    write_file(dir, "mine.jinja", "M{{ eos_token }}");
    out = render_dir(dir, file, msgs, NULL, NULL, &err);
    CHECK_MSG(out && !strcmp(out, "M<|im_end|>"), "%s", out ? out : err.msg);
    free(out);
    /* malformed config */
    write_file(dir, "tokenizer_config.json", "{\"chat_template\": 5}");
    unlink(file);
    snprintf(file, sizeof file, "%s/chat_template.jinja", dir);
    unlink(file);
    CHECK(lmc_chat_template_load(dir, NULL, NULL, &ct, &err) == LMC_ERR_FORMAT && !ct);
    write_file(dir, "tokenizer_config.json", "{not json");
    CHECK(lmc_chat_template_load(dir, NULL, NULL, &ct, &err) == LMC_ERR_FORMAT && !ct);
    snprintf(file, sizeof file, "%s/tokenizer_config.json", dir);
    unlink(file);
    rmdir(dir);
}

int main(void) {
    test_cases();
    test_refusals();
    test_loading();
    return test_finish("test_chat_template");
}
