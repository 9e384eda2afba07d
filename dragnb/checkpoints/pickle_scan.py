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
more than :data:`MAX_OPS` opcodes (each can allocate an object many times its size), more than
:data:`MAX_OTHER_KEYS` dict keys or set items that are not strings or bytes (their hashes can be made to
collide), nesting deeper than :data:`MAX_DEPTH`, and more than :data:`MAX_HASH_WORK` nodes hashed in total by the
operations that hash (dict keys, set items, and the allowlisted ``set``/``frozenset``/``OrderedDict``/
``EasyDict`` constructors). Genuine checkpoint pickles nest about 30 deep and hash only short strings.
"""

from __future__ import annotations

import io
import pickletools

from .errors import CheckpointError, TruncatedFileError

MAX_DEPTH = 200
MAX_HASH_WORK = 5_000_000
# Every opcode makes at most one object, and a one-byte opcode can make a 64-byte dict: bounding the count
# bounds what unpickling allocates beyond the file's own bytes (and the time this scan takes). Genuine
# checkpoint pickles have under 50,000: their size is in a few hundred large tensor blobs.
MAX_OPS = 250_000
# Keys whose hash is not randomised (numbers, tuples, ...) can be chosen to collide, making each dict insert
# linear: 100,000 of them (1.3 MB of pickle) take minutes. Genuine checkpoints key dicts by strings, plus a
# few hundred small integers in optimizer states.
MAX_OTHER_KEYS = 10_000
_CAP = 1 << 62  # unfolded sizes saturate here (they can double at every opcode)

# Callables on the allowlists that hash the items they are given.
HASHING_CALLABLES = {
    ("builtins", "set"), ("builtins", "frozenset"), ("__builtin__", "set"), ("__builtin__", "frozenset"),
    ("collections", "OrderedDict"), ("dnnlib.util", "EasyDict"),
}

_MARK = object()
_RANDOM_HASH = object()  # the value of a string or bytes node too long to keep: hashed with a random key
_TRUNCATION_WORDS = ("exhausted", "remain", "not enough data", "no newline found")

# What the scan does per opcode, looked up once per opcode by name.
(_PLAIN, _PUT, _MEMOIZE, _GET, _PUSH_MARK, _DUP, _POP, _POP_MARK, _NOTHING, _STOP, _KEY_VALUE_PAIRS, _ADD_ITEMS,
 _ALL_ITEMS, _CALL, _INST, _STRING, _GLOBAL, _STACK_GLOBAL) = range(18)
_KINDS = {
    "PUT": _PUT, "BINPUT": _PUT, "LONG_BINPUT": _PUT, "MEMOIZE": _MEMOIZE,
    "GET": _GET, "BINGET": _GET, "LONG_BINGET": _GET, "MARK": _PUSH_MARK, "DUP": _DUP, "POP": _POP,
    "POP_MARK": _POP_MARK, "FRAME": _NOTHING, "PROTO": _NOTHING, "STOP": _STOP,
    "SETITEM": _KEY_VALUE_PAIRS, "SETITEMS": _KEY_VALUE_PAIRS, "ADDITEMS": _ADD_ITEMS, "FROZENSET": _ALL_ITEMS,
    "REDUCE": _CALL, "NEWOBJ": _CALL, "NEWOBJ_EX": _CALL, "OBJ": _CALL, "INST": _INST,
    "GLOBAL": _GLOBAL, "STACK_GLOBAL": _STACK_GLOBAL,
    **{n: _STRING for n in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING",
                            "BINSTRING", "STRING", "SHORT_BINBYTES", "BINBYTES", "BINBYTES8")},
}
_IN_PLACE = {"APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD"}
# Per opcode: (kind, takes the items above a MARK, items taken from below it (or from the stack), pushes a
# result, updates the object below in place).
_OPS = {
    op.name: (
        _KINDS.get(op.name, _PLAIN),
        pickletools.markobject in op.stack_before,
        op.stack_before.index(pickletools.markobject) if pickletools.markobject in op.stack_before
        else len(op.stack_before),
        bool(op.stack_after),
        op.name in _IN_PLACE,
    )
    for op in pickletools.opcodes
}
# The kinds whose opcodes hash some of their operands.
_HASHING_KINDS = frozenset({_KEY_VALUE_PAIRS, _ADD_ITEMS, _ALL_ITEMS, _CALL, _INST})


class _Node:
    """What the scan knows of one object: depth, unfolded size, and for strings and globals their value."""

    __slots__ = ("depth", "size", "value")

    def __init__(self, depth: int = 0, size: int = 1, value=None):
        self.depth, self.size, self.value = depth, size, value


def _combine(items: list) -> _Node:
    if not items:
        return _Node()
    depth, size = 0, 1
    for n in items:
        if n.depth > depth:
            depth = n.depth
        size += n.size
    return _Node(depth + 1, min(_CAP, size))


def _grow(items: list) -> _Node:
    """APPEND, SETITEM, BUILD and friends: the object below the new items now holds them too."""
    node = items[0]
    for n in items[1:]:
        if n.depth >= node.depth:
            node.depth = n.depth + 1
        node.size += n.size
    node.size = min(_CAP, node.size)
    return node


def _new_node(kind: int, items: list, arg) -> _Node:
    """The object an opcode pushes: strings and globals keep their value (later opcodes look at it)."""
    if kind == _STRING:
        return _Node(value=arg if isinstance(arg, str) and len(arg) <= 200 else _RANDOM_HASH)
    if kind == _GLOBAL:
        module, _, qualname = str(arg).partition(" ")
        return _Node(value=(module, qualname))
    if kind == _STACK_GLOBAL:
        return _Node(value=(items[0].value, items[1].value))
    return _combine(items)


def _hashed_items(kind: int, items: list, arg) -> list:
    """The items an opcode of a hashing kind hashes: dict keys, set items, or a hashing callable's arguments."""
    if kind == _KEY_VALUE_PAIRS:
        return items[1::2]
    if kind == _ADD_ITEMS:
        return items[1:]
    if kind == _ALL_ITEMS:
        return items
    if kind == _CALL:
        return items[1:] if items and items[0].value in HASHING_CALLABLES else []
    return items if tuple(str(arg).split(" ", 1)) in HASHING_CALLABLES else []  # _INST


def scan_pickle(f: io.BufferedIOBase | io.BytesIO, source) -> None:
    """Scan one pickle from the current position of ``f`` up to its STOP (see the module docstring); the
    position is restored. Raises :class:`CheckpointError` (``TruncatedFileError`` for a cut-off pickle)."""
    start = f.tell()
    try:
        _Scanner(source).run(f)
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - genops reports malformed data with ValueError and friends
        text = str(e.args[0])[:200] if e.args and isinstance(e.args[0], str) else type(e).__name__
        if any(w in text for w in _TRUNCATION_WORDS):
            raise TruncatedFileError(f"{source}: the pickle is truncated (incomplete download?): {text}") from None
        raise CheckpointError(f"{source}: corrupt pickle: {text}") from None
    finally:
        f.seek(start)


class _Scanner:
    """The simulated stack and memo of one pickle, and the running totals that the limits bound."""

    __slots__ = ("source", "stack", "memo", "n_ops", "hash_work", "other_keys", "moves")

    def __init__(self, source):
        self.source = source
        self.stack: list = []
        self.memo: dict[int, _Node] = {}
        self.n_ops = self.hash_work = self.other_keys = 0
        # Opcodes that only move or drop existing objects, by kind: one dict lookup per opcode sends them to
        # their handler, and tells the rest (those that make or fill an object) to take the general path.
        self.moves = {
            _GET: self.get, _PUT: self.put, _MEMOIZE: self.memoize, _PUSH_MARK: self.push_mark, _DUP: self.dup,
            _POP: self.pop_top, _POP_MARK: self.pop_mark, _NOTHING: self.nothing, _STOP: self.stop,
        }

    def refuse(self, why):
        raise CheckpointError(f"{self.source}: refused to unpickle: {why}")

    def run(self, f) -> None:
        stack, moves = self.stack, self.moves
        for op, arg, _pos in pickletools.genops(f):
            self.n_ops += 1
            if self.n_ops > MAX_OPS:
                self.refuse(f"more than {MAX_OPS} pickle opcodes (a genuine checkpoint has far fewer)")
            kind, marked, below, pushes, in_place = _OPS[op.name]
            move = moves.get(kind)
            if move is not None:
                move(arg)
                continue
            items = self.take(marked, below)
            if kind in _HASHING_KINDS:
                self.count_hashing(kind, _hashed_items(kind, items, arg))
            node = _grow(items) if in_place else _new_node(kind, items, arg)
            if node.depth > MAX_DEPTH:
                self.refuse(f"objects nested more than {MAX_DEPTH} deep")
            if pushes:
                stack.append(node)

    # Stack and memo bookkeeping, one handler per kind of opcode that makes nothing.

    def get(self, index) -> None:
        node = self.memo.get(index)
        if node is None:
            self.refuse(f"memo index {index} read before it is written")
        self.stack.append(node)

    def put(self, index) -> None:
        # A genuine pickler numbers memo slots 0, 1, 2, ...: an index beyond the opcodes read so far would
        # only serve to make the C unpickler size its memo table for it.
        if not isinstance(index, int) or index < 0 or index > self.n_ops:
            self.refuse(f"memo index {index} out of range")
        if not self.stack or self.stack[-1] is _MARK:
            self.refuse("memo store of nothing")
        self.memo[index] = self.stack[-1]

    def memoize(self, _arg) -> None:
        self.put(len(self.memo))

    def push_mark(self, _arg) -> None:
        self.stack.append(_MARK)

    def dup(self, _arg) -> None:
        if not self.stack or self.stack[-1] is _MARK:
            self.refuse("DUP of nothing")
        self.stack.append(self.stack[-1])

    def pop_top(self, _arg) -> None:
        if not self.stack:
            self.refuse("POP of an empty stack")
        self.stack.pop()

    def pop_mark(self, _arg) -> None:
        self.pop_to_mark()

    def nothing(self, _arg) -> None:
        pass

    def stop(self, _arg) -> None:
        self.pop(1)

    def pop_to_mark(self) -> list:
        stack = self.stack
        for k in range(len(stack) - 1, -1, -1):
            if stack[k] is _MARK:
                items = stack[k + 1 :]
                del stack[k:]
                return items
        self.refuse("a pickle opcode without its MARK")

    def pop(self, n: int) -> list:
        items = self.stack[-n:]
        if len(items) < n or _MARK in items:
            self.refuse("the pickle's stack underflows")
        del self.stack[-n:]
        return items

    def take(self, marked: bool, below: int) -> list:
        """The operands of an opcode that makes or fills an object: those above its MARK (if it takes a
        MARK), after ``below`` more from under the MARK (or from the top of the stack)."""
        if marked:
            sliced = self.pop_to_mark()
            return self.pop(below) + sliced if below else sliced
        return self.pop(below) if below else []

    def count_hashing(self, kind: int, keys: list) -> None:
        """Add what hashing ``keys`` costs to the totals, refusing once a limit is passed."""
        if not keys:
            return
        for k in keys:
            self.hash_work += k.size
            if kind == _CALL:  # the argument tuple: whatever it holds may become keys
                self.other_keys += k.size - 1
            elif kind == _INST:
                self.other_keys += k.size
            elif not (k.value is _RANDOM_HASH or isinstance(k.value, str)):
                self.other_keys += 1
        if self.hash_work > MAX_HASH_WORK:
            self.refuse(f"its dict keys and set items would take more than {MAX_HASH_WORK} steps to hash "
                        "(memo-shared nested tuples)")
        if self.other_keys > MAX_OTHER_KEYS:
            self.refuse(f"more than {MAX_OTHER_KEYS} dict keys or set items that are not strings")
