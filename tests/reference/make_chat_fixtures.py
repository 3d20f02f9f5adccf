#!/usr/bin/env python3
"""make_chat_fixtures.py - the expected renderings of tests/test_chat_template.c.

Renders multi-turn conversations through the published chat templates saved
in tests/fixtures/chat_templates/*.jinja (where each comes from: README.md
there) with transformers' own template code, and writes
tests/fixtures/chat_templates/expected.json. The C engine must reproduce
every rendering byte for byte.

transformers' apply_chat_template needs a tokenizer (vocabulary files this
machine cannot download), so this calls the function it renders with,
transformers.utils.chat_template_utils.render_jinja_template, with the
variables apply_chat_template passes: the tokenizer's special tokens
(bos_token / eos_token from each model's tokenizer_config.json), tools=None,
documents=None, add_generation_prompt, and enable_thinking / date_string only
when a case sets them. Each rendering is checked once more against a jinja2
environment built here the way transformers builds its own (sandboxed,
trim_blocks, lstrip_blocks, loopcontrols, its tojson, raise_exception,
strftime_now, namespace), so a change in either is noticed.

strftime_now reads the clock: the cases that use it (Llama 3.2 without a
date_string) freeze it at NOW below, and the C test passes the same local
time.

Run (not in CI; the output is committed):
    python3 -m venv /tmp/tplvenv && /tmp/tplvenv/bin/pip install transformers jinja2
    /tmp/tplvenv/bin/python tests/reference/make_chat_fixtures.py
"""
import datetime as _dt
import json
import os
import sys

import jinja2
import jinja2.ext
import transformers
from jinja2.sandbox import ImmutableSandboxedEnvironment
from transformers.utils import chat_template_utils as ctu

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "..", "fixtures", "chat_templates")
NOW = _dt.datetime(2025, 3, 7, 12, 0, 0)  # the frozen clock of strftime_now

# name -> (template file, bos_token, eos_token) as each model's
# tokenizer_config.json gives them (Qwen: "bos_token": null)
MODELS = {
    "qwen3": ("qwen3.jinja", None, "<|im_end|>"),
    "qwen2.5": ("qwen2.5.jinja", None, "<|im_end|>"),
    "deepseek-r1-distill-qwen": ("deepseek-r1-distill-qwen.jinja", "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"),
    "deepseek-r1-distill-llama": ("deepseek-r1-distill-llama.jinja", "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"),
    "llama3.1": ("llama3.1.jinja", "<|begin_of_text|>", "<|eot_id|>"),
    "llama3.2": ("llama3.2.jinja", "<|begin_of_text|>", "<|eot_id|>"),
    "smollm2": ("smollm2.jinja", "<|im_start|>", "<|im_end|>"),
}

SYS = {"role": "system", "content": "You are a concise assistant. Answer in one line."}
U1 = {"role": "user", "content": "What is 7*8?"}
A1 = {"role": "assistant", "content": "56."}
U2 = {"role": "user", "content": "  And 9*9?  \n"}
A2 = {"role": "assistant", "content": "81, since 9*9 = 81."}
U3 = {"role": "user", "content": "Thanks! Say it in Fran\u00e7ais, with an emoji \U0001F600 and a tab\t."}
A_THINK1 = {"role": "assistant", "content": "<think>\nThe user asks 7*8.\n7*8 = 56.\n</think>\n\n56."}
A_THINK2 = {"role": "assistant", "content": "<think>Square of nine.</think>81."}
# reasoning kept apart from the answer, as chat datasets store it (Qwen3's
# template reads message.reasoning_content)
A_REASON1 = {"role": "assistant", "content": "56.", "reasoning_content": "\nThe user asks 7*8.\n"}
A_REASON2 = {"role": "assistant", "content": "\n81.", "reasoning_content": "Square of nine."}
U_SPECIAL = {"role": "user", "content": "Is <|im_end|> or <|eot_id|> a token? \"quotes\" and 'single' and \\backslash"}

CONVERSATIONS = {
    "user": [U1],
    "system-user": [SYS, U1],
    "two-turns": [SYS, U1, A1, U2],
    "three-turns-no-system": [U1, A1, U2, A2, U3],
    "ends-with-assistant": [SYS, U1, A1, U2, A2],
    "think-history": [U1, A_THINK1, U2, A_THINK2],
    "think-history-open": [SYS, U1, A_THINK1, U2],
    "reasoning-field": [U1, A_REASON1, U2, A_REASON2],
    "special-text": [U_SPECIAL, A1],
    "empty-content": [{"role": "user", "content": ""}, {"role": "assistant", "content": ""}],
    "late-system": [U1, A1, {"role": "system", "content": "Be brief."}, U2],
}


# Small templates for the engine's semantics, rendered with messages =
# [U1, A_THINK1, U2], add_generation_prompt = True, bos_token = "<s>".
ENGINE_CASES = [
    # whitespace control: trim_blocks, lstrip_blocks, -, +, comments, raw
    "  {% if true %}\n  x\n  {% endif %}\n  y {{ 'z' }}\n",
    "a  {%- if true -%}  b  {%- endif -%}  c\n{# note #}\nd {#- gone -#} e\n",
    "  {%+ if true %}kept{% endif +%}\nnext\n",
    "{% for m in messages %}\n    {{ m.role }}\n{% endfor %}\n",
    "{% raw %}{{ not rendered }} {% if %}{% endraw %}|{{ 'ok' }}",
    "line1\r\nline2\rline3\n\n",
    # values as Python prints them
    "{{ none }}|{{ true }}|{{ [1, 'a', none] }}|{{ {'a': 1, 'b': [true]} }}|{{ 1.0 }}|{{ 7/2 }}|{{ 7//2 }}|"
    "{{ -7//2 }}|{{ 7 % -3 }}|{{ 2 ** 10 }}|{{ 1e3 }}|{{ 0.1 + 0.2 }}|{{ (1, 2) }}|{{ (1,) }}|{{ undefined_x }}|"
    "{{ \"it's\" }}|{{ ['it\\'s', \"q\\\"\"] }}",
    "{{ 'a' ~ 1 ~ none ~ undefined_x }}|{{ 'ab' * 3 }}|{{ [1] + [2, 3] }}|{{ 1 < 2 < 3 }}|{{ 'b' > 'a' }}|"
    "{{ 1 == 1.0 }}|{{ true == 1 }}|{{ 'x' in 'axb' }}|{{ 'k' in {'k': 1} }}|{{ 3 not in [1, 2] }}",
    "{{ 'y' if false }}|{{ 'y' if true else 'n' }}|{{ undefined_x or 'dflt' }}|{{ 0 and 1 }}|{{ not none }}",
    # string methods
    "{{ '  pad\t\n'.strip() }}|{{ 'xxaxx'.strip('x') }}|{{ '\n\nx\n'.lstrip('\n') }}|{{ 'x  '.rstrip() }}|"
    "{{ 'a,b,,c'.split(',') }}|{{ ' a  b c '.split() }}|{{ 'a b c'.split(' ', 1) }}|{{ 'aXbX'.replace('X', 'yy') }}|"
    "{{ 'abc'.startswith('ab') }}|{{ 'abc'.endswith(('x', 'c')) }}|{{ 'Hello'.upper() }}|{{ 'HeLLo'.lower() }}|"
    "{{ 'hello world'.title() }}|{{ 'hELLO'.capitalize() }}|{{ 'abcb'.find('b') }}|{{ 'abcb'.count('b') }}|"
    "{{ '-'.join(['a', 'b']) }}",
    "{{ '\u00e9t\u00e9 \U0001F600'[::-1] }}|{{ 'abcdef'[1:4] }}|{{ 'abcdef'[-2:] }}|{{ 'abcdef'[::2] }}|"
    "{{ [1, 2, 3][-1] }}|{{ [1, 2, 3][::-1] }}|{{ [1, 2, 3][5] is defined }}|{{ '\u00e9t\u00e9'|length }}|"
    "{{ 'caf\u00e9'[3] }}",
    # filters
    "{{ '  t  '|trim }}|{{ 'xxtxx'|trim('x') }}|{{ messages|length }}|{{ {'b': '\u00e9\n', 'a': [1, none, true]}|tojson }}|"
    "{{ [1, {'k': 'v'}]|tojson(indent=2) }}|{{ {'b': 1, 'a': 2}|tojson(sort_keys=true) }}|{{ 'q\"\\\x01'|tojson }}|"
    "{{ 3|string }}|{{ [1, 2, 3]|reject('equalto', 2)|join(', ') }}|{{ ['a', 'b']|join }}|"
    "{{ [1, 2, 3, 4]|select('odd')|list }}|{{ {'k': 'v', 'j': 'w'}|items|list }}|{{ messages|map(attribute='role')|join(',') }}|"
    "{{ messages|selectattr('role', 'equalto', 'user')|list|length }}|{{ undefined_x|default('d') }}|"
    "{{ ''|default('e', true) }}|{{ [3, 1]|first }}|{{ [3, 1]|last }}|{{ 'ab'|upper }}|{{ -3|abs }}|"
    "{{ '42'|int + 1 }}|{{ [1, 1, 2]|unique|list }}|{{ 'a-b'|replace('-', '+') }}|{{ [1, 2]|reverse|list }}",
    # tests
    "{{ x is defined }}{{ none is none }}{{ 'a' is string }}{{ 1 is number }}{{ 1 is integer }}"
    "{{ 1.5 is float }}{{ true is boolean }}{{ {} is mapping }}{{ [] is iterable }}{{ 'a' is iterable }}"
    "{{ 3 is odd }}{{ 4 is even }}{{ 9 is divisibleby 3 }}{{ 2 is equalto 2 }}{{ 'a' is in 'abc' }}"
    "{{ x is not defined }}{{ false is false }}{{ true is true }}{{ 'ab' is lower }}{{ 2 is gt 1 }}"
    "{{ none is sequence }}{{ 5 is sameas 5 }}",
    # loops, scoping, namespaces
    "{% for i in [1, 2, 3] %}{{ loop.index0 }}{{ loop.index }}{{ loop.first }}{{ loop.last }}{{ loop.length }}"
    "{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.previtem }}{{ loop.nextitem }};{% endfor %}",
    "{% for i in range(3) %}{% if i == 0 %}{% set x = 'a' %}{% endif %}[{{ x }}]{% endfor %}",
    "{% set x = 'top' %}{% for i in range(2) %}[{{ x }}]{% set x = 'in' %}[{{ x }}]{% endfor %}[{{ x }}]",
    "{% if true %}{% set y = 1 %}{% endif %}{{ y }}",
    "{% set ns = namespace(a=1, found=false) %}{% for i in range(4) %}{% set ns.a = ns.a + i %}"
    "{% if i == 2 %}{% set ns.found = true %}{% endif %}{% endfor %}{{ ns.a }} {{ ns.found }}",
    "{% for i in range(10) %}{% if i == 1 %}{% continue %}{% endif %}{% if i == 4 %}{% break %}{% endif %}{{ i }}"
    "{% endfor %}",
    "{% for a, b in {'k': 'v', 'x': 'y'}|items %}{{ a }}={{ b }};{% endfor %}{% for c in 'h\u00e9' %}<{{ c }}>{% endfor %}",
    "{% for i in [] %}x{% else %}empty{% endfor %}|{% for i in [1, 2, 3, 4] if i is even %}{{ i }}{% endfor %}",
    "{% for m in messages %}{% for n in messages %}{{ loop.index0 }}{% endfor %}/{{ loop.index0 }} {% endfor %}",
    "{% set a, b = 1, 2 %}{{ a }}{{ b }}{% set t %}block {{ a }}{% endset %}[{{ t }}]",
    "{% set messages = messages[1:] %}{{ messages|length }} {{ messages[0].role }} {{ messages[0]['content'] }}",
    "{{ bos_token }}{% for m in messages %}{{ m.role }}:{{ m.reasoning_content is defined }}:"
    "{{ m.content.split('</think>')[-1].lstrip('\n') if '</think>' in m.content else m.content }}|{% endfor %}"
    "{% if add_generation_prompt %}GEN{% endif %}{{ enable_thinking is defined }}{{ tools is none }}",
    "{% generation %}tracked {{ 1 }}{% endgeneration %}",
    # macros (defaults evaluated at the call, keyword arguments, output as the value)
    "{% macro show(m, sep=': ', upper=false) %}{{ m.role|upper if upper else m.role }}{{ sep }}{{ m.content|trim }}"
    "{% endmacro %}{% for m in messages %}[{{ show(m) }}]{% endfor %}{{ show(messages[0], upper=true, sep='=') }}"
    "{% set s = show(messages[2]) %}{{ s|length }}",
    "{%- macro render(items) -%}\n  {%- for i in items %}{{ i }},{% endfor -%}\n{%- endmacro -%}\n"
    "{{ render([1, 2]) }}|{{ render(items=[3]) }}|{{ render }}",
    "{{ none|selectattr('x')|list }}|{{ none|map(attribute='x')|list }}|{{ none|reject('none')|list }}",
    "{{ ['b', 'A', 'c', 'B']|sort }}|{{ ['b', 'A', 'c']|sort(case_sensitive=true) }}|{{ [3, 1, 2]|sort(reverse=true) }}|"
    "{{ messages|sort(attribute='role')|map(attribute='role')|join(',') }}|{{ {'b': 1, 'A': 2, 'c': 0}|dictsort }}|"
    "{{ {'b': 1, 'A': 2, 'c': 0}|dictsort(by='value', reverse=true) }}|{{ [4, 2, 9]|min }}|{{ ['b', 'A']|max }}",
]


def transformers_environment():
    """A jinja2 environment set up as transformers' _compile_jinja_template does."""
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt):
        return NOW.strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    env.globals["namespace"] = jinja2.utils.Namespace
    env.globals["dict"] = dict
    return env


class _FrozenDatetime(_dt.datetime):
    @classmethod
    def now(cls, tz=None):
        return NOW


def render_transformers(template, messages, variables):
    saved = ctu.datetime
    ctu.datetime = _FrozenDatetime  # strftime_now reads datetime.now() at call time
    try:
        out, _ = ctu.render_jinja_template(conversations=[messages], tools=None, documents=None,
                                           chat_template=template, **variables)
    finally:
        ctu.datetime = saved
    return out[0]


def main():
    env = transformers_environment()
    out = {
        "generated_by": "tests/reference/make_chat_fixtures.py",
        "transformers_version": transformers.__version__,
        "jinja2_version": jinja2.__version__,
        "now_local": NOW.strftime("%Y-%m-%dT%H:%M:%S"),
        "conversations": CONVERSATIONS,
        "templates": {},
        "engine_cases": [],
    }
    n = 0
    for name, (fname, bos, eos) in MODELS.items():
        with open(os.path.join(FIX, fname), encoding="utf-8") as f:
            template = f.read()
        cases = []
        is_llama = name.startswith("llama")
        for conv_name, messages in CONVERSATIONS.items():
            for gen in (False, True):
                for thinking in (None, True, False):
                    dates = ("25 Dec 2025", None) if is_llama else (None,)
                    for date in dates:
                        variables = {"add_generation_prompt": gen}
                        if bos is not None:
                            variables["bos_token"] = bos
                        if eos is not None:
                            variables["eos_token"] = eos
                        if thinking is not None:
                            variables["enable_thinking"] = thinking
                        if date is not None:
                            variables["date_string"] = date
                        rendered = render_transformers(template, messages, variables)
                        again = env.from_string(template).render(messages=messages, tools=None, documents=None,
                                                                 **variables)
                        if again != rendered:
                            sys.exit(f"{name}/{conv_name}: our jinja2 environment differs from transformers'")
                        cases.append({"conversation": conv_name, "add_generation_prompt": gen,
                                      "enable_thinking": thinking, "date_string": date, "rendered": rendered})
                        n += 1
        out["templates"][name] = {"file": fname, "bos_token": bos, "eos_token": eos, "cases": cases}
    for src in ENGINE_CASES:
        rendered = render_transformers(src, [U1, A_THINK1, U2], {"add_generation_prompt": True, "bos_token": "<s>"})
        if "generation" in src:  # transformers' own {% generation %} tag: not in the environment built here
            again = rendered
        else:
            again = env.from_string(src).render(messages=[U1, A_THINK1, U2], tools=None, documents=None,
                                                add_generation_prompt=True, bos_token="<s>")
        if again != rendered:
            sys.exit(f"engine case {src!r}: our jinja2 environment differs from transformers'")
        out["engine_cases"].append({"template": src, "rendered": rendered})
    path = os.path.join(FIX, "expected.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {path}: {n} renderings of {len(MODELS)} templates")


if __name__ == "__main__":
    main()
