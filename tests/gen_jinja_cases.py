#!/usr/bin/env python3
"""Writes tests/fixtures/jinja_cases.json: small templates, one per Jinja
feature, with the rendering (or error) of Jinja2 configured as transformers
configures it (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks,
loopcontrols, raise_exception, strftime_now fixed to 2026-12-05, its tojson).
test_jinja.c renders each with lmc's engine and compares.
Run: python3 tests/gen_jinja_cases.py  (needs pip jinja2)."""
import json
from datetime import datetime

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def strftime_now(fmt):
    return datetime(2026, 12, 5).strftime(fmt)


class Generation(jinja2.ext.Extension):
    """{% generation %}...{% endgeneration %} renders its body, as transformers' AssistantTracker does."""
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render", []), [], [], body).set_lineno(lineno)

    def _render(self, caller):
        return caller()


env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols, Generation])
env.filters["tojson"] = tojson
env.globals["raise_exception"] = raise_exception
env.globals["strftime_now"] = strftime_now

MSGS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi \"there\" é 😀"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": {"a": 1, "b": [1.5, True, None]}}}]}]
V = {"messages": MSGS, "n": 7, "f": 2.5, "s": "  Hello World  ", "l": [3, 1, 2], "d": {"b": 2, "a": 1, "C": 3},
     "u": "héllo wörld", "none": None, "t": True, "names": ["Bob", "alice", "bob", "Carl"],
     "objs": [{"name": "x", "v": 1, "ok": True}, {"name": "y", "v": 2, "ok": False}, {"name": "z", "v": 3}]}

CASES = [
    # whitespace control, trim_blocks / lstrip_blocks, comments, raw
    ("ws_trim", "a\n{% if t %}\nb\n{% endif %}\nc\n", {}),
    ("ws_lstrip", "x\n    {% if t %}\n    y\n    {% endif %}\nz", {}),
    ("ws_minus", "a   {{- 'b' -}}   c\n  {%- if t -%}  d  {%- endif -%}\n e", {}),
    ("ws_plus", "a\n    {%+ if t %}b{% endif %}\n", {}),
    ("ws_var_no_lstrip", "x\n    {{ 1 }}\n", {}),
    ("ws_comment", "a\n  {# note #}\nb {#- x -#} c", {}),
    ("ws_raw", "{% raw %}{{ not }} {% evaluated %}{% endraw %}!", {}),
    ("ws_crlf", "a\r\n{% if t %}\r\nb\r\n{% endif %}\r\n", {}),
    ("ws_inline_block", "a {% if t %}b{% endif %} c", {}),
    # literals and printing (Python str / repr)
    ("print_values", "{{ [1, 'a', none, true, 1.5, {'k': \"v'\"}, (1,), (1, 2)] }}|{{ none }}|{{ t }}|{{ 10 / 4 }}|{{ 1e20 }}|{{ 0.1 + 0.2 }}|{{ 1e-5 }}", {}),
    ("print_undefined", "[{{ missing }}][{{ d.missing }}]", {}),
    ("print_dict_repr", "{{ d }}{{ messages[2].tool_calls[0].function }}", {}),
    ("string_escapes", "{{ 'a\\nb\\t\\'c\\u00e9\\x41' }}{{ \"q\" 'r' }}", {}),
    ("repr_quotes", "{{ [\"it's\", 'say \"hi\"', 'both \\' \"', 'new\\nline'] }}", {}),
    # arithmetic and operators
    ("arith", "{{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 7 % -3 }} {{ 2 ** 10 }} {{ 2 ** -1 }} {{ 7 / 7 }} {{ n * 2 + 1 }} {{ f * 2 }} {{ -n }} {{ 'ab' * 3 }} {{ [1] * 2 }}", {}),
    ("concat_tilde", "{{ 1 ~ 'a' ~ none ~ true ~ missing }}", {}),
    ("compare", "{{ 1 < 2 }} {{ 'a' < 'b' }} {{ 1 == 1.0 }} {{ true == 1 }} {{ [1,2] == [1,2] }} {{ 'x' != 'y' }} {{ 2 >= 2 }} {{ 'é' > 'z' }}", {}),
    ("in_ops", "{{ 'ell' in 'hello' }} {{ 2 in l }} {{ 'a' in d }} {{ 'zz' not in d }} {{ 4 not in l }}", {}),
    ("logic", "{{ 0 or 'x' }} {{ 1 and 'y' }} {{ none or [] }} {{ not 0 }} {{ not l }} {{ 'a' if t }}|{{ 'a' if not t }}|{{ 'b' if false else 'c' }}", {}),
    ("precedence", "{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 2 ** 3 ** 2 }} {{ -2 ** 2 }} {{ not 1 == 2 }} {{ 'ab' ~ 'c' | upper }}", {}),
    ("slicing", "{{ l[1:] }} {{ l[:-1] }} {{ l[::-1] }} {{ s[2:7] }} {{ u[1:4] }} {{ u[-1] }} {{ u[::2] }} {{ l[5:] }} {{ 'abcdef'[1:5:2] }}", {}),
    ("item_attr", "{{ d['a'] }} {{ d.b }} {{ l[0] }} {{ l[-1] }} {{ messages[1]['role'] }} {{ messages.0.role }} {{ d.items is defined }} {{ l[10] is defined }}", {}),
    # statements
    ("if_elif", "{% for x in [1, 2, 3] %}{% if x == 1 %}one{% elif x == 2 %}two{% else %}many{% endif %};{% endfor %}", {}),
    ("for_loop_vars", "{% for x in l %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}{{ loop.previtem }}{{ loop.nextitem }}{{ loop.cycle('a', 'b') }}|{% endfor %}", {}),
    ("for_else", "{% for x in [] %}x{% else %}empty{% endfor %}{% for x in none_list if x %}y{% else %}E2{% endfor %}", {"none_list": [0, 0]}),
    ("for_filter_len", "{% for x in l if x > 1 %}{{ x }}/{{ loop.length }} {% endfor %}", {}),
    ("for_unpack", "{% for k, v in d.items() %}{{ k }}={{ v }},{% endfor %}{% for a, b in [[1, 2], (3, 4)] %}{{ a + b }}{% endfor %}", {}),
    ("for_dict_string", "{% for k in d %}{{ k }}{% endfor %}|{% for ch in 'héy' %}[{{ ch }}]{% endfor %}", {}),
    ("break_continue", "{% for x in range(10) %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 5 %}{% break %}{% endif %}{{ x }}{% endfor %}", {}),
    ("nested_loop_depth", "{% for a in [1, 2] %}{% for b in [3] %}{{ loop.depth }}{{ a }}{{ b }}{% endfor %}{{ loop.depth }}{% endfor %}", {}),
    ("set_scoping", "{% set x = 1 %}{% for i in range(3) %}{% if i == 0 %}{% set x = 5 %}{% endif %}{{ x }}{% endfor %}{{ x }}{% if t %}{% set y = 2 %}{% endif %}{{ y }}", {}),
    ("set_tuple", "{% set a, b = 1, 2 %}{{ a }}{{ b }}{% set c = 3, %}{{ c }}", {}),
    ("namespace", "{% set ns = namespace(found=false, n=0) %}{% for x in l %}{% if x == 1 %}{% set ns.found = true %}{% endif %}{% set ns.n = ns.n + x %}{% endfor %}{{ ns.found }} {{ ns.n }}", {}),
    ("set_block", "{% set blk %}\n  Hello {{ n }}\n{% endset %}[{{ blk }}]{% set up2 | upper | trim %} abc {% endset %}[{{ up2 }}]", {}),
    ("macro_defaults", "{% macro greet(name, greeting='Hello', punct='!') %}{{ greeting }}, {{ name }}{{ punct }}{% endmacro %}{{ greet('Ann') }} {{ greet('Bo', punct='?') }} {{ greet('Cy', 'Hi') }}", {}),
    ("macro_varargs_kwargs", "{% macro m(a) %}{{ a }}{{ varargs }}{{ kwargs }}{% endmacro %}{{ m(1, 2, 3, x=4) }}", {}),
    ("macro_caller", "{% macro wrap(tag) %}<{{ tag }}>{{ caller() }}</{{ tag }}>{% endmacro %}{% call wrap('b') %}bold {{ n }}{% endcall %}", {}),
    ("macro_caller_args", "{% macro each(items) %}{% for i in items %}{{ caller(i) }}{% endfor %}{% endmacro %}{% call(x) each([1, 2]) %}<{{ x }}>{% endcall %}", {}),
    ("macro_recursion", "{% macro fact(k) %}{% if k <= 1 %}1{% else %}{{ k * (fact(k - 1) | int) }}{% endif %}{% endmacro %}{{ fact(5) }}", {}),
    ("macro_sees_later_globals", "{% macro m() %}{{ g }}{% endmacro %}{% set g = 'late' %}{{ m() }}", {}),
    ("filter_block", "{% filter upper %}hello {{ n }}{% endfilter %}{% filter replace('a', 'o') | trim %}  banana  {% endfilter %}", {}),
    ("generation_block", "A{% generation %}B{{ n }}{% endgeneration %}C", {}),
    # tests
    ("tests_types", "{{ n is number }}{{ f is float }}{{ n is integer }}{{ t is boolean }}{{ s is string }}{{ d is mapping }}{{ l is sequence }}{{ l is iterable }}{{ none is none }}{{ missing is defined }}{{ missing is undefined }}{{ t is true }}{{ t is false }}{{ n is not string }}{{ s is iterable }}{{ d is iterable }}{{ n is iterable }}{{ 'x' is mapping }}", {}),
    ("tests_values", "{{ 3 is odd }}{{ 4 is even }}{{ 9 is divisibleby 3 }}{{ n is equalto 7 }}{{ n is eq(7) }}{{ 'abc' is lower }}{{ 'ABC' is upper }}{{ 2 is in(l) }}{{ 1 is gt 0 }}{{ 1 is le 0 }}{{ greet is callable }}{{ none is sameas none }}", {"greet": 1}),
    # filters
    ("f_trim_case", "[{{ s | trim }}][{{ s | upper }}][{{ s | lower }}][{{ 'hello wORLD-foo(bar' | title }}][{{ 'hELLO' | capitalize }}][{{ u | upper }}][{{ 'xxhixx' | trim('x') }}]", {}),
    ("f_replace", "{{ 'aaa' | replace('a', 'b') }} {{ 'aaa' | replace('a', 'b', 2) }} {{ 'abc' | replace('', '-') }}", {}),
    ("f_length_first_last", "{{ l | length }} {{ u | length }} {{ d | length }} {{ missing | length }} {{ l | first }} {{ l | last }} {{ 'xyz' | first }} {{ [] | first }}|{{ l | count }}", {}),
    ("f_join", "{{ l | join(', ') }} {{ names | join }} {{ objs | join('/', attribute='name') }}", {}),
    ("f_default", "{{ missing | default('dflt') }} {{ none | default('x') }} {{ '' | default('e', true) }} {{ 0 | d('z', boolean=true) }} {{ n | default(1) }}", {}),
    ("f_string_int_float", "{{ 42 | string }}{{ '12' | int + 1 }} {{ '3.7' | int }} {{ 'x' | int }} {{ 'x' | int(5) }} {{ 2.9 | int }} {{ '2.5' | float }} {{ 3 | float }} {{ 'ff' | int(0, 16) }} {{ t | int }}", {}),
    ("f_list_items_keys", "{{ 'abc' | list }} {{ d | list }} {{ d | items | list }} {{ d.keys() | list }} {{ d.values() | list }} {{ d.items() }}", {}),
    ("f_dictsort", "{{ d | dictsort }} {{ d | dictsort(true) }} {{ d | dictsort(by='value', reverse=true) }}", {}),
    ("f_selectattr", "{{ objs | selectattr('ok') | map(attribute='name') | list }} {{ objs | rejectattr('ok') | map(attribute='name') | list }} {{ objs | selectattr('v', 'equalto', 2) | list }} {{ objs | selectattr('ok', 'defined') | list | length }} {{ objs | selectattr('name', 'in', ['x', 'z']) | map(attribute='v') | list }}", {}),
    ("f_select_map", "{{ l | select('odd') | list }} {{ l | reject('odd') | list }} {{ names | map('upper') | list }} {{ objs | map(attribute='missing', default='-') | list }} {{ names | map('replace', 'b', 'B') | join(',') }}", {}),
    ("f_unique_sort_minmax", "{{ names | unique | list }} {{ names | unique(case_sensitive=true) | list }} {{ names | sort }} {{ names | sort(reverse=true, case_sensitive=true) }} {{ objs | sort(attribute='v', reverse=true) | map(attribute='name') | join }} {{ l | min }} {{ l | max }} {{ names | max }} {{ names | min(case_sensitive=true) }} {{ [3, 1] | sum }} {{ objs | sum(attribute='v') }}", {}),
    ("f_indent", "[{{ 'a\\nb\\n\\nc' | indent }}][{{ 'a\\nb' | indent(2, true) }}][{{ 'a\\n\\nb' | indent(2, blank=true) }}][{{ 'x\\ny' | indent('> ') }}]", {}),
    ("f_tojson", "{{ messages | tojson }}\n{{ d | tojson(indent=2) }}\n{{ d | tojson(sort_keys=true) }}\n{{ l | tojson(separators=(',', ':')) }}\n{{ 'é😀\\n\\u0001' | tojson }}\n{{ 'é😀' | tojson(ensure_ascii=true) }}\n{{ {'a': [], 'b': {}, 'c': [1, {'d': 2}]} | tojson(indent=4) }}\n{{ [1.0, 1e300, -0.5, none, true] | tojson }}", {}),
    ("f_safe_escape_format", "{{ '<a&b>' | safe }} {{ '<a&\"b\\'>' | escape }} {{ '%s-%d-%.2f-%5s|%-4s|' | format('a', 3, 2.5, 'r', 'l') }} {{ 'x=%(x)s' | format(x=1) }} {{ '%r' % ('q',) }} {{ '%s and %s' % (1, 'b') }} {{ '%05.1f%%' % 2.25 }}", {}),
    ("f_misc", "{{ -3 | abs }} {{ 2.567 | round(2) }} {{ 2.5 | round }} {{ 2.1 | round(0, 'ceil') }} {{ l | reverse | list }} {{ 'abc' | reverse }} {{ 'a b  c' | wordcount }} {{ [1,2,3,4,5] | batch(2) | list }} {{ d | attr('items') is defined }}", {}),
    # methods
    ("m_strip_split", "[{{ s.strip() }}][{{ s.lstrip() }}][{{ s.rstrip() }}][{{ 'xxaxx'.strip('x') }}] {{ 'a,b,,c'.split(',') }} {{ '  a  b '.split() }} {{ 'a b c'.split(' ', 1) }} {{ 'a,b,c'.rsplit(',', 1) }} {{ 'l1\\nl2\\r\\nl3'.splitlines() }} {{ ' a b '.split(none, 1) }}", {}),
    ("m_affix_case", "{{ s.startswith('  H') }} {{ 'file.py'.endswith(('.js', '.py')) }} {{ 'abc'.upper() }} {{ 'ABC'.lower() }} {{ 'hello world'.title() }} {{ 'hello'.capitalize() }} {{ 'aXb'.swapcase() }} {{ 'abcabc'.find('c') }} {{ 'abcabc'.rfind('c') }} {{ 'abc'.find('z') }} {{ 'aaa'.count('a') }} {{ '12'.isdigit() }} {{ 'ab'.isalpha() }} {{ '  '.isspace() }} {{ 'pre_x'.removeprefix('pre_') }}", {}),
    ("m_replace_join_format", "{{ 'a-b-c'.replace('-', '+') }} {{ 'a-b-c'.replace('-', '+', 1) }} {{ ', '.join(names) }} {{ '{} is {}'.format('x', 1) }} {{ '{0}{1}{0}'.format('a', 'b') }} {{ '{name}!'.format(name='N') }} {{ '{{}} {!r}'.format('q') }} {{ 'a:b:c'.partition(':') }}", {}),
    ("m_dict_list", "{{ d.get('a') }} {{ d.get('zz') }} {{ d.get('zz', 0) }} {{ d.items() | list }} {{ d.keys() | list }} {{ l.index(2) }} {{ l.count(1) }} {{ d.copy() }}", {}),
    # globals
    ("g_range", "{{ range(3) | list }} {{ range(1, 10, 3) | list }} {{ range(5, 0, -2) | list }} {{ range(0) | list }}", {}),
    ("g_dict_namespace", "{{ dict(a=1, b='x') }} {% set ns = namespace(items=[]) %}{% set ns.items = ns.items + [1] %}{{ ns.items }}", {}),
    ("g_strftime", "{{ strftime_now('%Y-%m-%d %d %b %Y %A %B %H:%M') }}", {}),
    # variables transformers passes
    ("vars_messages", "{% for m in messages %}{{ m.role }}:{{ m.content if m.content is string else m.content | tojson }};{% endfor %}{{ messages[2].tool_calls[0].function.arguments | tojson }}", {}),
    # errors
    ("e_raise", "{% if n > 1 %}{{ raise_exception('Too big: ' ~ n) }}{% endif %}", {}),
    ("e_concat_type", "{{ 'a' + d }}", {}),
    ("e_precedence_concat", "{{ 1 ~ 2 + 3 }}", {}),
    ("e_concat_list", "{{ l + 'a' }}", {}),
    ("e_add_types", "{{ 1 + 'a' }}", {}),
    ("e_unsafe_append", "{% set x = [] %}{{ x.append(1) }}", {}),
    ("e_unsafe_dict_pop", "{{ d.pop('a') }}", {}),
    ("e_undefined_attr", "{{ missing.attr }}", {}),
    ("e_none_iter", "{% for x in none %}{% endfor %}", {}),
    ("e_int_iter", "{% for x in n %}{% endfor %}", {}),
    ("e_no_filter", "{{ n | nosuchfilter }}", {}),
    ("e_no_test", "{{ n is nosuchtest }}", {}),
    ("e_div_zero", "{{ 1 / 0 }}", {}),
    ("e_compare_types", "{{ 1 < 'a' }}", {}),
    ("e_range_big", "{{ range(1000000) | length }}", {}),
    ("e_not_namespace", "{% set x = 1 %}{% set x.y = 2 %}", {}),
    ("e_syntax", "{% if %}", {}),
    ("e_unclosed", "{% for x in l %}", {}),
    ("e_unknown_tag", "{% include 'x' %}", {}),
]

out = []
for name, tmpl, extra in CASES:
    vars_ = dict(V)
    vars_.update(extra)
    case = {"name": name, "template": tmpl, "vars": vars_}
    try:
        case["rendered"] = env.from_string(tmpl).render(**vars_)
    except Exception as e:  # noqa: BLE001 - the reference's failure is the expectation
        case["error"] = type(e).__name__ + ": " + str(e)
    out.append(case)

with open("tests/fixtures/jinja_cases.json", "w") as f:
    json.dump({"jinja2": jinja2.__version__, "cases": out}, f, ensure_ascii=False, indent=1)
print(len(out), "cases")
