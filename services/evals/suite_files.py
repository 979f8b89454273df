"""The suite's filesystem tasks: read, list, write, edit, chain, recover, read in parts."""

from __future__ import annotations

import random

from services.evals.checks import all_of, file_holds, quotes, says_number
from services.evals.tasks import EvalTask, Evidence, Prepared, Scratch, Verdict, failed, passed, token

FS = ("filesystem",)
BIG_FILE_LINES = 600  # the big file's length: far past BRIDGE_TOOL_OUTPUT_MAX_CHARS, so it is read in parts


def _read_secret(scratch: Scratch, rng: random.Random) -> Prepared:
    secret = token(rng)
    lines = [f"note {i}: {token(rng)} is not it" for i in range(5)]
    lines.insert(rng.randint(1, 4), f"SECRET: {secret}")
    scratch.write("ledger.txt", "\n".join(lines) + "\n")
    return Prepared(
        "Read the file ledger.txt and tell me the value on its line that starts with SECRET:.", {"secret": secret}
    )


def _read_nested(scratch: Scratch, rng: random.Random) -> Prepared:
    code = token(rng)
    scratch.write("vault/inner/code.txt", f"access code: {code}\n")
    return Prepared("What is the access code written in the file vault/inner/code.txt?", {"secret": code})


def _list_dir(scratch: Scratch, rng: random.Random) -> Prepared:
    logs = sorted({f"{rng.choice(('app', 'db', 'net'))}-{rng.randint(100, 999)}.log" for _ in range(3)})
    for name in logs:
        scratch.write(f"box/{name}", "log\n")
    scratch.write("box/readme.md", "not a log\n")
    return Prepared(
        "List the directory box and tell me the names of all files in it that end with .log.", {"names": logs}
    )


def _check_list(evidence: Evidence) -> Verdict:
    missing = [n for n in evidence.facts["names"] if n not in evidence.output]
    return failed(f"the answer leaves out {missing}") if missing else passed("the answer names every .log file")


def _write_file(scratch: Scratch, rng: random.Random) -> Prepared:
    phrase = f"{rng.choice(('green', 'quiet', 'swift'))} {token(rng)}"
    return Prepared(f"Create the file greeting.txt whose whole content is exactly: {phrase}", {"content": phrase})


def _edit_file(scratch: Scratch, rng: random.Random) -> Prepared:
    name = token(rng)
    scratch.write("settings.ini", f"[main]\nname={name}\nmode=slow\n")
    return Prepared(
        "In the file settings.ini change the line mode=slow to mode=fast; keep every other line.",
        {"content": f"[main]\nname={name}\nmode=fast\n"},
    )


def _make_dir(scratch: Scratch, rng: random.Random) -> Prepared:
    name = f"made-{rng.randint(1000, 9999)}"
    return Prepared(f"Create a new directory named {name}.", {"name": name})


def _check_dir(evidence: Evidence) -> Verdict:
    name = evidence.facts["name"]
    if (evidence.scratch.files / name).is_dir():
        return passed(f"the directory {name} exists")
    return failed(f"there is no directory {name}")


def _count_lines(scratch: Scratch, rng: random.Random) -> Prepared:
    count = rng.randint(11, 39)
    scratch.write("rows.txt", "".join(f"row {token(rng)}\n" for _ in range(count)))
    return Prepared("How many lines does the file rows.txt have? Read it and count them.", {"number": count})


def _pointer(scratch: Scratch, rng: random.Random) -> Prepared:
    target, secret = f"drawer-{rng.randint(100, 999)}.txt", token(rng)
    scratch.write("pointer.txt", f"The answer is in the file {target}.\n")
    scratch.write(target, f"answer: {secret}\n")
    return Prepared(
        "The file pointer.txt names another file. Read that other file and tell me its answer.",
        {"secret": secret, "target": target},
    )


def _copy(scratch: Scratch, rng: random.Random) -> Prepared:
    content = f"copy me: {token(rng)}"
    scratch.write("source.txt", content + "\n")
    return Prepared(
        "Read the file source.txt and write its content, unchanged, to a new file copy.txt.", {"content": content}
    )


def _missing_file(scratch: Scratch, rng: random.Random) -> Prepared:
    secret = token(rng)
    path = f"archive/notes-{rng.randint(10, 99)}.txt"
    scratch.write(path, f"the note says: {secret}\n")
    return Prepared(
        "Read the file notes.txt and tell me what the note says. If there is no such file, list the directory "
        "archive and read the notes file in it instead.",
        {"secret": secret, "path": path},
    )


def _check_recovered(evidence: Evidence) -> Verdict:
    errors = [s for s in evidence.result.steps if s.is_error]
    recovered = passed("a failed call was followed by the right one") if errors else failed("no call failed first")
    return all_of(quotes(evidence, evidence.facts["secret"], "the note"), recovered)


def _big_file(scratch: Scratch, rng: random.Random) -> Prepared:
    secret = token(rng)
    lines = [
        f"filler line {i}: {' '.join(rng.choice(('lorem', 'ipsum', 'dolor')) for _ in range(8))}"
        for i in range(BIG_FILE_LINES)
    ]
    scratch.write("big.txt", "\n".join([*lines, f"LAST: {secret}"]) + "\n")
    return Prepared("The file big.txt is long. What does its very last line say?", {"secret": secret})


def _search(scratch: Scratch, rng: random.Random) -> Prepared:
    marker = f"{rng.choice(('alpha', 'beta', 'gamma'))}{rng.randint(1000, 9999)}"
    where = f"deep/{rng.choice(('x', 'y'))}/{rng.choice(('p', 'q'))}/file-{marker}.dat"
    scratch.write(where, "data\n")
    scratch.write("deep/x/other.dat", "data\n")
    return Prepared(
        f"Somewhere under the directory deep there is a file whose name contains {marker}. What is its path?",
        {"secret": where.rsplit("/", 1)[-1], "marker": marker},
    )


def _size(scratch: Scratch, rng: random.Random) -> Prepared:
    size = rng.randint(1200, 9800)
    (scratch.files / "blob.bin").write_bytes(b"x" * size)
    return Prepared("What is the size of the file blob.bin in bytes?", {"number": size})


FILE_TASKS = [
    EvalTask("read_secret", "read", FS, _read_secret, lambda e: quotes(e, e.facts["secret"], "the secret value")),
    EvalTask("read_nested", "read", FS, _read_nested, lambda e: quotes(e, e.facts["secret"], "the access code")),
    EvalTask("list_logs", "read", FS, _list_dir, _check_list),
    EvalTask("file_size", "read", FS, _size, lambda e: says_number(e, e.facts["number"], "the size")),
    EvalTask("count_lines", "read", FS, _count_lines, lambda e: says_number(e, e.facts["number"], "the line count")),
    EvalTask("search_file", "read", FS, _search, lambda e: quotes(e, e.facts["secret"], "the file's name")),
    EvalTask("write_file", "write", FS, _write_file, lambda e: file_holds(e, "greeting.txt", e.facts["content"])),
    EvalTask("edit_file", "write", FS, _edit_file, lambda e: file_holds(e, "settings.ini", e.facts["content"])),
    EvalTask("make_dir", "write", FS, _make_dir, _check_dir),
    EvalTask("follow_pointer", "chain", FS, _pointer, lambda e: quotes(e, e.facts["secret"], "the answer")),
    EvalTask("copy_file", "chain", FS, _copy, lambda e: file_holds(e, "copy.txt", e.facts["content"])),
    EvalTask("missing_file", "recovery", FS, _missing_file, _check_recovered, max_rounds=5),
    EvalTask("big_file_tail", "window", FS, _big_file, lambda e: quotes(e, e.facts["secret"], "the last line")),
]
