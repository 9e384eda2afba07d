"""A static pass over a pickle's opcodes before any unpickler runs them: bounds what unpickling can cost.

The allowlist unpickler (``safe_pickle.py``) stops a pickle from calling anything harmful, but plain opcodes
can still hurt the C unpickler itself:

* a memo index sizes its memo table: ``LONG_BINPUT 2**28`` (an 11-byte file) allocates 2 GB;
* ``BINBYTES8`` declaring 2**40 bytes allocates them before finding they are not there;
* tuples nested 300,000 deep used as a dict key overflow the C stack when hashed: a crash, not an error;
* memo-shared tuples (``t = (t, t, t, t)`` sixteen times) take 200 bytes, and hashing one visits 4**16 of them.

:func:`scan_pickle` walks the opcodes with ``pickletools.genops`` (which reads each argument without
allocating its declared length first) and simulates the stack with one small record per object: its
nesting depth and its unfolded size (how many nodes a recursive walk visits, memo sharing expanded). It
refuses a memo index beyond the number of opcodes read (a genuine pickler numbers memo slots 0, 1, 2, ...),
nesting deeper than :data:`MAX_DEPTH`, and more than :data:`MAX_HASH_WORK` nodes hashed in total by the
operations that hash (dict keys, set items, and the allowlisted ``set``/``frozenset``/``OrderedDict``/
``EasyDict`` constructors). Genuine checkpoint pickles nest about 30 deep and hash only short strings.
"""

from __future__ import annotations

import io
import pickletools

from .errors import CheckpointError, TruncatedFileError

MAX_DEPTH = 200
MAX_HASH_WORK = 5_000_000
_CAP = 1 << 62  # unfolded sizes saturate here (they can double at every opcode)

# Callables on the allowlists that hash the items they are given.
HASHING_CALLABLES = {
    ("builtins", "set"), ("builtins", "frozenset"), ("__builtin__", "set"), ("__builtin__", "frozenset"),
    ("collections", "OrderedDict"), ("dnnlib.util", "EasyDict"),
}

_MARK = object()
_PUTS = {"PUT", "BINPUT", "LONG_BINPUT"}
_GETS = {"GET", "BINGET", "LONG_BINGET"}
_IN_PLACE = {"APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD"}
_CALLS = {"REDUCE", "NEWOBJ", "NEWOBJ_EX", "OBJ"}
_STRINGS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING", "STRING"}
_TRUNCATION_WORDS = ("exhausted", "remain", "not enough data", "no newline found")
# Per opcode: (takes the items above a MARK, items taken from below it or from the stack, pushes a result).
_LAYOUT = {
    op.name: (
        pickletools.markobject in op.stack_before,
        op.stack_before.index(pickletools.markobject) if pickletools.markobject in op.stack_before
        else len(op.stack_before),
        bool(op.stack_after),
    )
    for op in pickletools.opcodes
}


class _Node:
    """What the scan knows of one object: depth, unfolded size, and for strings and globals their value."""

    __slots__ = ("depth", "size", "value")

    def __init__(self, depth: int = 0, size: int = 1, value=None):
        self.depth, self.size, self.value = depth, size, value


def _combine(items: list) -> _Node:
    depth = 1 + max((n.depth for n in items), default=-1)
    return _Node(depth, min(_CAP, 1 + sum(n.size for n in items)))


def scan_pickle(f: io.BufferedIOBase | io.BytesIO, source) -> None:
    """Scan one pickle from the current position of ``f`` up to its STOP (see the module docstring); the
    position is restored. Raises :class:`CheckpointError` (``TruncatedFileError`` for a cut-off pickle)."""
    start = f.tell()
    try:
        _scan(f, source)
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - genops reports malformed data with ValueError and friends
        text = str(e.args[0])[:200] if e.args and isinstance(e.args[0], str) else type(e).__name__
        if any(w in text for w in _TRUNCATION_WORDS):
            raise TruncatedFileError(f"{source}: the pickle is truncated (incomplete download?): {text}") from None
        raise CheckpointError(f"{source}: corrupt pickle: {text}") from None
    finally:
        f.seek(start)


def _scan(f, source) -> None:
    stack: list = []
    memo: dict[int, _Node] = {}
    hash_work = 0
    n_ops = 0

    def refuse(why):
        raise CheckpointError(f"{source}: refused to unpickle: {why}")

    def pop_to_mark() -> list:
        for k in range(len(stack) - 1, -1, -1):
            if stack[k] is _MARK:
                items = stack[k + 1 :]
                del stack[k:]
                return items
        refuse("a pickle opcode without its MARK")

    def pop(n: int) -> list:
        if len(stack) < n or any(x is _MARK for x in stack[len(stack) - n :]):
            refuse("the pickle's stack underflows")
        items = stack[len(stack) - n :]
        del stack[len(stack) - n :]
        return items

    for op, arg, _pos in pickletools.genops(f):
        n_ops += 1
        name = op.name
        if name in _PUTS or name == "MEMOIZE":
            index = len(memo) if name == "MEMOIZE" else arg
            if not isinstance(index, int) or index < 0 or index > n_ops:
                refuse(f"memo index {index} out of range")
            if not stack or stack[-1] is _MARK:
                refuse("memo store of nothing")
            memo[index] = stack[-1]
            continue
        if name in _GETS:
            node = memo.get(arg)
            if node is None:
                refuse(f"memo index {arg} read before it is written")
            stack.append(node)
            continue
        if name == "MARK":
            stack.append(_MARK)
            continue
        if name == "DUP":
            if not stack or stack[-1] is _MARK:
                refuse("DUP of nothing")
            stack.append(stack[-1])
            continue
        if name == "POP":
            if not stack:
                refuse("POP of an empty stack")
            stack.pop()
            continue
        if name == "POP_MARK":
            pop_to_mark()
            continue
        if name in ("STOP", "FRAME", "PROTO"):
            if name == "STOP":
                pop(1)
            continue

        marked, below, pushes = _LAYOUT[name]
        if marked:
            sliced = pop_to_mark()
            items = pop(below) + sliced if below else sliced
        else:
            items = pop(below) if below else []

        if name in ("SETITEM", "SETITEMS"):
            keys = items[1::2]
        elif name == "ADDITEMS":
            keys = items[1:]
        elif name == "FROZENSET":
            keys = items
        elif name in _CALLS and items and items[0].value in HASHING_CALLABLES:
            keys = items[1:]
        elif name == "INST" and tuple(str(arg).split(" ", 1)) in HASHING_CALLABLES:
            keys = items
        else:
            keys = ()
        if keys:
            hash_work += sum(k.size for k in keys)
            if hash_work > MAX_HASH_WORK:
                refuse(f"its dict keys and set items would take more than {MAX_HASH_WORK} steps to hash "
                       "(memo-shared nested tuples)")

        if name in _IN_PLACE:
            target, rest = items[0], items[1:]
            target.depth = max(target.depth, 1 + max((n.depth for n in rest), default=-1))
            target.size = min(_CAP, target.size + sum(n.size for n in rest))
            node = target
        elif name in _STRINGS:
            node = _Node(value=arg if isinstance(arg, str) and len(arg) <= 200 else None)
        elif name == "GLOBAL":
            module, _, qualname = str(arg).partition(" ")
            node = _Node(value=(module, qualname))
        elif name == "STACK_GLOBAL":
            node = _Node(value=(items[0].value, items[1].value))
        else:
            node = _combine(items)
        if node.depth > MAX_DEPTH:
            refuse(f"objects nested more than {MAX_DEPTH} deep")
        if pushes:
            stack.append(node)
