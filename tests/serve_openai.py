"""serve_openai.py — drives `lmc serve` with the OpenAI Python client (see
test_serve_openai.sh). Usage: serve_openai.py LMC MODEL_DIR"""
import json, os, shutil, subprocess, sys, tempfile

import openai

try:
    import jsonschema
except ImportError:  # validation skipped, structure still checked
    jsonschema = None

LMC, SRC = sys.argv[1], sys.argv[2]
TEMPLATE = (
    "{%- if tools %}<|im_start|>system\nTools: {% for t in tools %}{{ t.function.name }} {% endfor %}. "
    "Call one as <tool_call>{\"name\": ..., \"arguments\": ...}</tool_call>.<|im_end|>\n{% endif %}"
    "{%- for m in messages %}<|im_start|>{{ m.role }}\n"
    "{% if m.tool_calls %}{% for c in m.tool_calls %}<tool_call>"
    "{{ {'name': c.function.name, 'arguments': c.function.arguments} | tojson }}</tool_call>{% endfor %}"
    "{% else %}{{ m.content }}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
WEATHER = {"type": "object", "properties": {
    "city": {"type": "string", "minLength": 1, "maxLength": 12},
    "days": {"type": "integer", "minimum": 1, "maximum": 7},
    "unit": {"enum": ["celsius", "fahrenheit"]}}, "required": ["city", "days", "unit"]}
TIME = {"type": "object", "properties": {"zone": {"enum": ["UTC", "CET"]}}, "required": ["zone"]}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather forecast",
                                           "parameters": WEATHER}},
         {"type": "function", "function": {"name": "get_time", "description": "Clock", "parameters": TIME}}]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
ANSWER = {"type": "object", "properties": {
    "verse": {"type": "integer", "minimum": 1, "maximum": 176},
    "book": {"type": "string", "maxLength": 10},
    "tags": {"type": "array", "items": {"enum": ["law", "psalm", "gospel"]}, "minItems": 1, "maxItems": 3},
    "note": {"anyOf": [{"type": "null"}, {"type": "boolean"}]},
    "code": {"type": "string", "pattern": "^[A-Z]{2}-\\d{3}(?:[a-c]|_x)?$"}},
    "required": ["verse", "book", "tags", "note", "code"]}

failed = 0


def check(cond, what):
    global failed
    if not cond:
        failed += 1
        print("FAIL:", what)


def validate(obj, schema, what):
    if jsonschema is None:
        check(isinstance(obj, dict), what + ": not an object")
        return
    try:
        jsonschema.validate(obj, schema)
    except jsonschema.ValidationError as e:
        check(False, "%s: %s" % (what, e.message))


tmp = tempfile.mkdtemp()
model = os.path.join(tmp, "m")
os.mkdir(model)
for f in os.listdir(SRC):
    if os.path.isfile(os.path.join(SRC, f)):
        os.symlink(os.path.abspath(os.path.join(SRC, f)), os.path.join(model, f))
with open(os.path.join(model, "chat_template.jinja"), "w") as f:
    f.write(TEMPLATE)
srv = subprocess.Popen([LMC, "serve", "-m", model, "--host", "127.0.0.1", "--port", "0", "--model-name", "kjv"],
                       stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
port = None
for line in srv.stderr:  # waits on the server's own line, no polling
    if "listening on http://127.0.0.1:" in line:
        port = int(line.rsplit(":", 1)[1])
        break
if port is None:
    print("FAIL: server did not start")
    sys.exit(1)
try:
    client = openai.OpenAI(base_url="http://127.0.0.1:%d/v1" % port, api_key="none", timeout=120, max_retries=0)
    user = [{"role": "user", "content": "What is the weather in Paris for three days?"}]

    # 1. tool_choice required, one call, not streamed
    r = client.chat.completions.create(model="kjv", messages=user, tools=TOOLS, tool_choice="required",
                                       parallel_tool_calls=False, temperature=0, max_tokens=120)
    ch = r.choices[0]
    calls = ch.message.tool_calls or []
    check(ch.finish_reason == "tool_calls", "required: finish_reason %r" % ch.finish_reason)
    check(len(calls) == 1, "required: %d calls (content %r)" % (len(calls), ch.message.content))
    for c in calls:
        check(c.type == "function" and c.id.startswith("call_"), "required: call id/type")
        check(c.function.name in SCHEMAS, "required: unknown function %r" % c.function.name)
        validate(json.loads(c.function.arguments), SCHEMAS.get(c.function.name, {}), "required arguments")
    first_call = calls[0] if calls else None

    # 2. a named function, streamed: id/type/name first, then argument fragments
    stream = client.chat.completions.create(
        model="kjv", messages=user, tools=TOOLS, stream=True, temperature=0, max_tokens=120,
        tool_choice={"type": "function", "function": {"name": "get_weather"}})
    head, args, finish, order_ok = None, "", None, True
    for chunk in stream:
        d = chunk.choices[0].delta if chunk.choices else None
        if chunk.choices and chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
        for tc in (d.tool_calls or []) if d else []:
            check(tc.index == 0, "stream: index %r" % tc.index)
            if tc.id:
                order_ok &= head is None and args == ""
                head = (tc.id, tc.type, tc.function.name)
            else:
                order_ok &= head is not None
                args += tc.function.arguments or ""
    check(head is not None and head[1] == "function" and head[2] == "get_weather", "stream: head %r" % (head,))
    check(order_ok, "stream: name must come before the argument fragments")
    check(finish == "tool_calls", "stream: finish_reason %r" % finish)
    validate(json.loads(args) if args else None, WEATHER, "streamed arguments")

    # 2b. required, streamed, with the non-streamed answer's content
    stream = client.chat.completions.create(model="kjv", messages=user, tools=TOOLS, tool_choice="required",
                                            parallel_tool_calls=False, stream=True, temperature=0, max_tokens=120)
    sargs, sname, nfrag = "", None, 0
    for chunk in stream:
        for tc in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            sname = tc.function.name or sname
            sargs += tc.function.arguments or ""
            nfrag += bool(tc.function.arguments)
    if first_call:  # streamed as it decodes: the fragments join to the non-streamed arguments, byte for byte
        check(sname == first_call.function.name and sargs == first_call.function.arguments,
              "stream and non-stream required calls differ: %r vs %r" % (sargs, first_call.function.arguments))
        check(nfrag >= 2, "required stream: %d argument fragments" % nfrag)

    # 3. the round trip: the call and its result back in, a plain answer out
    if first_call:
        convo = user + [
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": first_call.id, "type": "function",
                 "function": {"name": first_call.function.name, "arguments": first_call.function.arguments}}]},
            {"role": "tool", "tool_call_id": first_call.id, "content": "{\"forecast\": \"sunny\"}"}]
        r = client.chat.completions.create(model="kjv", messages=convo, tools=TOOLS, tool_choice="none",
                                           temperature=0, max_tokens=16)
        ch = r.choices[0]
        check(not ch.message.tool_calls and isinstance(ch.message.content, str) and ch.finish_reason in ("stop", "length"),
              "round trip: %r" % (ch,))
        # auto: the tiny model answers in words, which come back as content
        r = client.chat.completions.create(model="kjv", messages=convo, tools=TOOLS, temperature=0, max_tokens=16)
        check(isinstance(r.choices[0].message.content, str), "auto: content")
        # auto, streamed: the same content, delta by delta
        parts = [c.choices[0].delta.content for c in client.chat.completions.create(
            model="kjv", messages=convo, tools=TOOLS, temperature=0, max_tokens=16, stream=True)
            if c.choices and c.choices[0].delta.content]
        check("".join(parts) == r.choices[0].message.content and len(parts) > 1,
              "auto stream: %r vs %r" % (parts, r.choices[0].message.content))

    # 4. response_format json_schema, chat and completions
    rf = {"type": "json_schema", "json_schema": {"name": "answer", "schema": ANSWER, "strict": True}}
    r = client.chat.completions.create(model="kjv", messages=[{"role": "user", "content": "Name a verse."}],
                                       response_format=rf, temperature=0, max_tokens=150)
    check(r.choices[0].finish_reason == "stop", "chat json_schema: finish %r" % r.choices[0].finish_reason)
    chat_json = json.loads(r.choices[0].message.content)
    validate(chat_json, ANSWER, "chat json_schema")
    r = client.completions.create(model="kjv", prompt="And God said", temperature=0, max_tokens=150,
                                  extra_body={"response_format": rf})
    check(r.choices[0].finish_reason == "stop", "completions json_schema: finish %r" % r.choices[0].finish_reason)
    validate(json.loads(r.choices[0].text), ANSWER, "completions json_schema")
    # streamed structured output joins to the same JSON
    text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="kjv", messages=[{"role": "user", "content": "Name a verse."}], response_format=rf, temperature=0,
        max_tokens=150, stream=True) if c.choices)
    validate(json.loads(text), ANSWER, "streamed json_schema")
    check(json.loads(text) == chat_json, "streamed and non-streamed json_schema differ")
    if os.environ.get("LMC_TEST_VERBOSE"):
        print("required:", first_call, "\nnamed streamed:", args, "\njson:", text)
    # an unsupported schema keyword is a 400 naming the field
    try:
        client.chat.completions.create(model="kjv", messages=user, max_tokens=4, response_format={
            "type": "json_schema", "json_schema": {"name": "x", "schema": {"allOf": [{"type": "object"}]}}})
        check(False, "allOf accepted")
    except openai.BadRequestError as e:
        check("allOf" in str(e), "allOf error: %s" % e)
finally:
    srv.terminate()
    rest = srv.stderr.read()  # until the server exits: a sanitizer's report would be here
    rc = srv.wait(timeout=60)
    check(rc == 0 and "Sanitizer" not in rest, "server exit %d: %s" % (rc, rest[-2000:]))
    shutil.rmtree(tmp, ignore_errors=True)
print("test_serve_openai: %s%s" % ("FAILED (%d)" % failed if failed else "ok",
                                   "" if jsonschema else " (jsonschema not installed: schemas not validated)"))
sys.exit(1 if failed else 0)
