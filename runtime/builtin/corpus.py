"""The synthetic corpus of the built-in model: arithmetic problems and a few fixed chat turns.

Everything is drawn from a `random.Random` the caller seeds, so a corpus (and the held-out set,
drawn from a seed string the trainer never uses) is the same on every machine.

Problems are bare expressions (`47*23`, `What is 12 + 7 - 3?`), chains of two or three
operations with the usual precedence, and word problems; additions, subtractions and products
of up to three-digit by two-digit numbers. `arithmetic.solve` writes their working.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from llmservice.runtime.builtin.arithmetic import BinOp, Expr, Num, evaluate, parse_chain, solve
from llmservice.runtime.builtin.chat_format import Message, assistant_target, render_prompt

# The seed namespaces: training shards and the held-out set never share a stream.
TRAIN_STREAM = "train"
HELDOUT_STREAM = "heldout"
HELDOUT_SEED = 20250101
MAX_WORKING_CHARS = 480


@dataclass(frozen=True, slots=True)
class Exchange:
    """One user turn and the model's reply to it."""

    question: str
    """The user's text."""
    reasoning: str
    """What the model writes inside `<think>`."""
    answer: str
    """The final answer after `</think>` (for a problem: the number alone)."""


@dataclass(frozen=True, slots=True)
class Sample:
    """A training conversation: the prompt text and the reply the model must learn."""

    prompt: str
    """The rendered conversation up to and including the generation prompt."""
    target: str
    """`<think>reasoning</think>answer<|end|>`."""


# --- surface forms -------------------------------------------------------------------------

_QUESTION_FORMS = (
    "What is {e}?",
    "What is {e}?",
    "what is {e}?",
    "What is {e}",
    "What's {e}?",
    "{e}",
    "{e}",
    "{e}",
    "{e} = ?",
    "{e}=",
    "{e}?",
    "Compute {e}.",
    "Calculate {e}.",
    "calculate {e}",
    "Solve {e}.",
    "How much is {e}?",
    "Please compute {e}.",
    "Can you work out {e}?",
)
_SYMBOLS = {"+": ("+",), "-": ("-",), "*": ("*", "*", "x", "×")}
_WORDS = {"+": ("plus",), "-": ("minus",), "*": ("times", "multiplied by")}

_NAMES = ("Tom", "Anna", "Ben", "Maria", "Sam", "Lily", "Omar", "Mei", "Jack", "Sara", "Leo")
_ITEMS = ("apples", "marbles", "stickers", "books", "coins", "cookies", "pencils", "cards")

# Word problems of one operation: (template, operator). {a} and {b} are the operands in the
# order of the expression a op b.
_WORD_TEMPLATES = (
    ("{n} has {a} {i} and gets {b} more. How many {i} does {n} have now?", "+"),
    ("There are {a} {i} in one box and {b} {i} in another. How many {i} are there in all?", "+"),
    (
        "{n} read {a} pages on Monday and {b} pages on Tuesday. How many pages is that in total?",
        "+",
    ),
    ("{n} had {a} {i} and gave away {b}. How many {i} does {n} have left?", "-"),
    ("A shop had {a} {i} and sold {b} of them. How many {i} are left?", "-"),
    ("{n} has {a} {i} and {m} has {b}. How many more {i} does {n} have than {m}?", "-"),
    ("There are {a} boxes with {b} {i} in each box. How many {i} are there in total?", "*"),
    ("{n} buys {a} packs of {i}. Each pack has {b} {i}. How many {i} does {n} buy?", "*"),
    ("A ticket costs {b} dollars. How much do {a} tickets cost?", "*"),
)
# The steps of a story (a chain applied left to right). {b} is the step's operand.
_STORY_STEPS = {
    "+": ("{n} buys {b} more.", "{n} finds {b} more.", "A friend gives {n} {b} more."),
    "-": ("{n} gives away {b}.", "{n} loses {b}.", "{n} uses {b} of them."),
    "*": ("Then the number of {i} is multiplied by {b}.",),
}
_STORY_QUESTIONS = ("How many {i} does {n} have now?", "How many {i} are there now?")

# --- fixed chat turns ------------------------------------------------------------------------

_GREETING_REPLY = (
    "Hello! I'm tiny-reasoner, a small model that solves arithmetic step by step. "
    'Ask me something like "What is 47 * 23?"'
)
_ABOUT_REPLY = (
    "I'm tiny-reasoner, the small built-in model of llmservice. I can add, subtract and "
    "multiply numbers (products up to three digits by two digits), work through chains "
    "like 12 + 7 * 3 and solve short word problems, showing my working step by step. "
    'Try "What is 305 - 78?"'
)
_CHAT_TURNS: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (
        ("hi", "hello", "hey", "Hi!", "Hello!", "Hey there", "hi there", "Good morning"),
        "The user greets me. I greet them back and say what I can do.",
        _GREETING_REPLY,
    ),
    (
        ("how are you?", "How are you doing?", "Hello, how are you?"),
        "The user asks how I am.",
        "I'm doing well, thank you! Give me an arithmetic problem and I'll solve it.",
    ),
    (
        ("what can you do?", "What can you do", "who are you?", "What are you?", "help"),
        "The user asks what I can do.",
        _ABOUT_REPLY,
    ),
    (
        ("thanks", "thank you", "Thank you!", "great, thanks"),
        "The user thanks me.",
        "You're welcome! Ask me another arithmetic question any time.",
    ),
    (
        ("bye", "goodbye", "See you!"),
        "The user says goodbye.",
        "Goodbye!",
    ),
    (
        (
            "What is the capital of France?",
            "Tell me a joke.",
            "Write a poem.",
            "What's the weather like today?",
        ),
        "This is not an arithmetic question, and arithmetic is all I can do.",
        'I can only solve arithmetic: addition, subtraction and multiplication. Try "What is 47 * 23?"',
    ),
)
_SYSTEM_PROMPTS = (
    "You are a helpful assistant.",
    "You are tiny-reasoner.",
    "You are a helpful math assistant. Think step by step.",
)


def _number(rng: random.Random, max_digits: int) -> int:
    """A number whose digit count is uniform in 1..max_digits (so small ones are common too)."""
    digits = rng.randint(1, max_digits)
    return rng.randint(0 if digits == 1 else 10 ** (digits - 1), 10**digits - 1)


def _operands(rng: random.Random, op: str) -> tuple[int, int]:
    """Two operands for `op`: up to three digits; a product has one factor of up to two."""
    if op == "*":
        a, b = _number(rng, 3), _number(rng, 2)
        return (a, b) if rng.random() < 0.6 else (b, a)
    a, b = _number(rng, 3), _number(rng, 3)
    if op == "-" and a < b and rng.random() < 0.5:
        a, b = b, a  # a quarter of the differences stay negative
    return a, b


def _spell(expr_numbers: list[int], ops: list[str], rng: random.Random) -> str:
    """A user's spelling of a chain: with or without spaces, symbols or words."""
    words = rng.random() < 0.12
    spaced = words or rng.random() < 0.6
    parts = [str(expr_numbers[0])]
    for op, number in zip(ops, expr_numbers[1:], strict=True):
        symbol = rng.choice(_WORDS[op] if words else _SYMBOLS[op])
        parts.append(f" {symbol} " if spaced else symbol)
        parts.append(str(number))
    return "".join(parts)


def _expression_question(rng: random.Random, n_ops: int) -> tuple[str, Expr]:
    """A bare expression of `n_ops` operations (at most two products), as a user asks it."""
    while True:
        ops = [
            rng.choices(("+", "-", "*"), weights=(4, 3.5, 2.5 if n_ops > 1 else 5))[0]
            for _ in range(n_ops)
        ]
        if ops.count("*") > 2:
            continue
        if n_ops == 1:
            numbers = list(_operands(rng, ops[0]))
        else:
            # A factor of a product mostly has at most two digits, other numbers three;
            # _fits turns down the products that grow too large.
            numbers = [
                _number(rng, 2 if "*" in ops[max(i - 1, 0) : i + 1] and rng.random() < 0.7 else 3)
                for i in range(n_ops + 1)
            ]
        expr = parse_chain(numbers, ops)
        if _fits(expr):
            form = rng.choice(_QUESTION_FORMS)
            return form.format(e=_spell(numbers, ops, rng)), expr


def _word_question(rng: random.Random) -> tuple[str, Expr]:
    """A word problem: one operation from a template, or a story of two or three steps."""
    name, other = rng.sample(_NAMES, 2)
    item = rng.choice(_ITEMS)
    if rng.random() < 0.6:
        template, op = rng.choice(_WORD_TEMPLATES)
        a, b = _operands(rng, op)
        if op == "-" and a < b:
            a, b = b, a  # nobody gives away more than they have
        text = template.format(n=name, m=other, i=item, a=a, b=b)
        return text, BinOp(op, Num(a), Num(b))
    while True:
        start = _number(rng, 3)
        expr: Expr = Num(start)
        sentences = [f"{name} has {start} {item}."]
        for _ in range(rng.randint(2, 3)):
            op = rng.choices(("+", "-", "*"), weights=(4, 4, 2))[0]
            operand = rng.randint(2, 9) if op == "*" else _number(rng, 3)
            if op == "-" and operand > evaluate(expr):
                operand = rng.randint(0, evaluate(expr))
            expr = BinOp(op, expr, Num(operand))
            sentences.append(rng.choice(_STORY_STEPS[op]).format(n=name, i=item, b=operand))
        if _fits(expr):
            sentences.append(rng.choice(_STORY_QUESTIONS).format(n=name, i=item))
            return " ".join(sentences), expr


def _fits(expr: Expr) -> bool:
    """Whether `expr` is solvable in the trained range with a working short enough to fit, with
    its prompt, in the model's context (MAX_WORKING_CHARS is about 320 tokens)."""
    try:
        working, _ = solve(expr)
    except ValueError:
        return False
    return len(working) <= MAX_WORKING_CHARS


def sample_problem(rng: random.Random) -> Exchange:
    """One arithmetic problem with its working and answer."""
    kind = rng.random()
    if kind < 0.55:
        question, expr = _expression_question(rng, 1)
    elif kind < 0.8:
        question, expr = _expression_question(rng, rng.randint(2, 3))
    else:
        question, expr = _word_question(rng)
    working, value = solve(expr)
    return Exchange(question=question, reasoning=working, answer=str(value))


def sample_chat_turn(rng: random.Random) -> Exchange:
    """One of the fixed conversational turns, with a user text in one of its spellings."""
    questions, reasoning, reply = rng.choice(_CHAT_TURNS)
    return Exchange(question=rng.choice(questions), reasoning=reasoning, answer=reply)


def sample_conversation(rng: random.Random) -> Sample:
    """A training sample: sometimes a system prompt and earlier turns, then the turn to learn."""
    messages: list[Message] = []
    if rng.random() < 0.08:
        messages.append(Message("system", rng.choice(_SYSTEM_PROMPTS)))
    for _ in range(rng.choice((0,) * 9 + (1, 2))):
        earlier = sample_problem(rng) if rng.random() < 0.7 else sample_chat_turn(rng)
        messages.append(Message("user", earlier.question))
        messages.append(Message("assistant", earlier.answer))
    final = sample_chat_turn(rng) if rng.random() < 0.04 else sample_problem(rng)
    messages.append(Message("user", final.question))
    return Sample(render_prompt(messages), assistant_target(final.reasoning, final.answer))


def heldout_problems(count: int, seed: int = HELDOUT_SEED) -> list[Exchange]:
    """`count` problems from a stream the trainer never draws from (see TRAIN_STREAM)."""
    rng = random.Random(f"{HELDOUT_STREAM}:{seed}")
    return [sample_problem(rng) for _ in range(count)]


def training_rng(seed: int, shard: int) -> random.Random:
    """The generator of one training shard."""
    return random.Random(f"{TRAIN_STREAM}:{seed}:{shard}")
