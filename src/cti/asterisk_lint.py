"""Strict checks of the Asterisk configuration and dialplans shipped with cti, without Asterisk.

    python -m cti.asterisk_lint [asterisk-conf/ [dialplans/]]

Two layers. The parser reads Asterisk's INI dialect as Asterisk does — `[section]`,
`[name](!)` templates and `[name](tpl,...)` inheritance, `key = value` / `key => value`,
`;` comments and `;-- --;` blocks, `#include` / `#tryinclude` — and the dialplan grammar
(`exten => pattern,priority(label),App(args)`, `same => n,...`, hints, `include =>`). It reports
syntax errors, duplicate keys and sections, bad priorities, unbalanced ()/[]/{}/${}/$[] and quotes.

The rules then check what only this project knows: every UserEvent a dialplan emits is one the
cti tracker reads, with the headers it needs (TRACKED_USER_EVENTS); every Queue() names a queue of
queues.conf and is followed by the QueueExit event; every Goto/GotoIf/GotoIfTime/Gosub target
exists; every application and function is known and its module loaded; the contexts the daemon
originates into exist (ORIGINATE_CONTEXTS); the AMI user has exactly the classes the daemon needs;
every module modules.conf loads exists in Asterisk 22 and has the modules it requires loaded too
(asterisk_module_deps.json, generated from the 22.10.1 sources by scripts/asterisk-module-deps);
queues.conf has no keyword Asterisk 22 rejects, sets each queue's strategy once (app_queue keeps
the first) and no value app_queue would read as something else; logger.conf keeps the queue_log.

Why our own: `asterisklint` (PyPI, last release 2022) parses dialplans well but knows Asterisk
11/13 applications (it rejects AMD), none of the other files, and none of cti's contracts.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path


def _words(text: str) -> frozenset[str]:
    """A set of names written as one space-separated string (long keyword tables stay readable)."""
    return frozenset(text.split())


# ---------------------------------------------------------------------------- contracts with cti

# UserEvent names the tracker (src/cti/calls/tracker.py) and the AGI contract know.
TRACKED_USER_EVENTS = frozenset({"IVR", "QueueExit", "DialerConnected", "DialerAmd", "AgiDone"})


@dataclass(frozen=True)
class UserEventSpec:
    required: frozenset[str]
    optional: frozenset[str] = frozenset()
    one_of: frozenset[str] = frozenset()  # exactly one of these headers
    fixed: tuple[tuple[str, str], ...] = ()  # header values that must be written exactly so


USER_EVENT_SPECS: dict[str, UserEventSpec] = {
    "IVR": UserEventSpec(frozenset({"Menu"}), one_of=frozenset({"Choice", "Invalid", "Timeout", "Step"})),
    "QueueExit": UserEventSpec(frozenset({"Queue", "Status"}), fixed=(("Status", "${QUEUESTATUS}"),)),
    "DialerConnected": UserEventSpec(
        frozenset({"Campaign", "Contact"}),
        fixed=(("Campaign", "${CTI_CAMPAIGN}"), ("Contact", "${CTI_CONTACT}")),
    ),
    "DialerAmd": UserEventSpec(
        frozenset({"Campaign", "Contact", "Status", "Cause"}),
        fixed=(
            ("Campaign", "${CTI_CAMPAIGN}"),
            ("Contact", "${CTI_CONTACT}"),
            ("Status", "${AMDSTATUS}"),
            ("Cause", "${AMDCAUSE}"),
        ),
    ),
    "AgiDone": UserEventSpec(frozenset({"Customer", "Prio"}), optional=frozenset({"Lookup"})),
}
IVR_INVALID_VALUE = "${INVALID_EXTEN}"
IVR_TIMEOUT_VALUE = "yes"
_MENU_NAME = re.compile(r"[a-z][a-z0-9-]*$")

# Contexts the daemon names in AMI Originate (Context:, or the Local/…@context channel), with an
# extension each must accept.
ORIGINATE_CONTEXTS = frozenset({"cti-dialer-connect", "cti-click-to-call", "cti-dialer-out"})
ORIGINATE_EXTENSIONS = {"cti-dialer-connect": "s", "cti-click-to-call": "s", "cti-dialer-out": "+33612345678"}
# Queue() targets filled in at run time by the daemon's Originate (the campaign's queue).
RUNTIME_QUEUE_VARIABLES = frozenset({"CTI_QUEUE"})

# AMI actions the daemon sends, with the write classes Asterisk registers for each (main/manager.c,
# apps/app_queue.c). An action is allowed when the user's write classes meet any of them.
DAEMON_ACTIONS: dict[str, frozenset[str]] = {
    "Login": frozenset(),
    "Logoff": frozenset(),
    "Ping": frozenset(),
    "QueueStatus": frozenset(),
    "QueueSummary": frozenset(),
    "CoreShowChannels": frozenset({"system", "reporting"}),
    "CoreSettings": frozenset({"system", "reporting"}),
    "Status": frozenset({"system", "call", "reporting"}),
    "Originate": frozenset({"originate"}),
    "QueueAdd": frozenset({"agent"}),
    "QueueRemove": frozenset({"agent"}),
    "QueuePause": frozenset({"agent"}),
    "Hangup": frozenset({"system", "call"}),
    "Redirect": frozenset({"call"}),
    "BlindTransfer": frozenset({"call"}),
    "Atxfer": frozenset({"call"}),
}
# Write classes cti must never hold: each turns an AMI secret into control of the whole PBX.
FORBIDDEN_WRITE_CLASSES = frozenset({"all", "system", "command", "config"})
# Event name -> AMI class, for every event the tracker reads (as seen in the Asterisk 22.10.1
# captures' Privilege: headers). The test compares this with the tracker's own list.
TRACKER_EVENT_CLASSES: dict[str, str] = {
    **dict.fromkeys(
        _words(
            "Newchannel NewCallerid DialBegin DialEnd BridgeEnter BridgeLeave BlindTransfer AttendedTransfer "
            "SoftHangupRequest HangupRequest Hangup OriginateResponse"
        ),
        "call",
    ),
    **dict.fromkeys(
        _words(
            "QueueCallerJoin QueueCallerLeave QueueCallerAbandon AgentCalled AgentRingNoAnswer "
            "AgentConnect AgentComplete QueueMemberStatus QueueMemberAdded QueueMemberPause "
            "QueueMemberPaused QueueMemberRemoved"
        ),
        "agent",
    ),
    "UserEvent": "user",
    "Shutdown": "system",
    "FullyBooted": "system",
}
AMI_CLASSES = _words(
    "system call log verbose command agent user config dtmf reporting cdr dialplan originate agi cc aoc "
    "test security message all"
)

# ---------------------------------------------------------------------------- Asterisk facts

OBSOLETE_QUEUE_KEYS = {
    "eventwhencalled": 'Asterisk 22 always sends AgentCalled events ("Unknown keyword" warning)',
    "eventmemberstatus": 'Asterisk 22 always sends QueueMemberStatus events ("Unknown keyword" warning)',
    "monitor-type": "res_monitor was removed in Asterisk 21 (use MixMonitor)",
    "monitor-format": "res_monitor was removed in Asterisk 21 (use MixMonitor)",
    "membermacro": "app_macro was removed in Asterisk 21 (use membergosub)",
}
REMOVED_MODULES = {
    "chan_local.so": "Local channels are part of the core since Asterisk 12",
    "chan_sip.so": "chan_sip was removed in Asterisk 21 (use chan_pjsip)",
    "app_macro.so": "app_macro was removed in Asterisk 21 (use Gosub)",
    "res_monitor.so": "res_monitor was removed in Asterisk 21 (use MixMonitor)",
    "res_pjsip_transport_management.so": "no such module in Asterisk 22: its code is built into res_pjsip "
    "(res/res_pjsip/pjsip_transport_management.c)",
}


@dataclass(frozen=True)
class ModuleTable:
    """Asterisk's loadable modules and what main/loader.c requires before starting each one, as
    scripts/asterisk-module-deps read them from the source tree (src/cti/asterisk_module_deps.json)."""

    version: str
    builtin: frozenset[str]  # compiled into the asterisk binary: cdr, cel, extconfig, http...
    requires: dict[str, tuple[str, ...]]  # module -> .requires + .enhances (all hard dependencies)
    applications: dict[str, str | None]  # lower-case application -> module (None: the core)
    functions: dict[str, str | None]

    @classmethod
    def from_json(cls, data: dict[str, object]) -> ModuleTable:
        modules: dict[str, dict[str, list[str]]] = data["modules"]  # type: ignore[assignment]
        core: dict[str, list[str]] = data["core"]  # type: ignore[assignment]
        builtin: list[str] = data["builtin"]  # type: ignore[assignment]
        provided: dict[str, dict[str, str | None]] = {"applications": {}, "functions": {}}
        for kind, names in provided.items():
            names.update(dict.fromkeys((n.lower() for n in core[kind]), None))
            for module, info in modules.items():
                names.update(dict.fromkeys((n.lower() for n in info[kind]), module + ".so"))
        return cls(
            str(data["asterisk"]),
            frozenset(builtin),
            {name: (*info["requires"], *info["enhances"]) for name, info in modules.items()},
            provided["applications"],
            provided["functions"],
        )

    def exists(self, module: str) -> bool:
        return module.removesuffix(".so") in self.requires


@functools.cache
def module_table() -> ModuleTable:
    text = resources.files("cti").joinpath("asterisk_module_deps.json").read_text(encoding="utf-8")
    return ModuleTable.from_json(json.loads(text))


REQUIRED_MODULES = frozenset(
    {
        "pbx_config.so",
        "res_agi.so",
        "app_queue.so",
        "app_userevent.so",
        "app_amd.so",
        "app_dial.so",
        "app_stack.so",
        "chan_pjsip.so",
        "res_pjsip.so",
        "res_pjsip_session.so",
        "res_rtp_asterisk.so",
        "res_musiconhold.so",
    }
)

# Dialplan applications: lower-case name -> module, None for the PBX core (main/pbx_builtins.c,
# main/pbx_*.c). Names outside this table are reported: add an entry when you really need one.
# A test checks both tables against the applications and functions each Asterisk 22.10.1 module
# documents (asterisk_module_deps.json): ImportVar, for one, no longer exists (use IMPORT()).
APP_MODULES: dict[str, str | None] = {
    **dict.fromkeys(
        _words(
            "answer background busy congestion execiftime goto gotoif gotoiftime hangup incomplete "
            "noop proceeding progress raiseexception ringing set mset wait waitdigit waitexten"
        ),
        None,
    ),
    "dial": "app_dial.so",
    "queue": "app_queue.so",
    "addqueuemember": "app_queue.so",
    "removequeuemember": "app_queue.so",
    "pausequeuemember": "app_queue.so",
    "unpausequeuemember": "app_queue.so",
    "queuelog": "app_queue.so",
    "userevent": "app_userevent.so",
    "agi": "res_agi.so",
    "amd": "app_amd.so",
    "playback": "app_playback.so",
    "gosub": "app_stack.so",
    "gosubif": "app_stack.so",
    "return": "app_stack.so",
    "stackpop": "app_stack.so",
    "execif": "app_exec.so",
    "exec": "app_exec.so",
    "tryexec": "app_exec.so",
    "verbose": "app_verbose.so",
    "log": "app_verbose.so",
    "while": "app_while.so",
    "endwhile": "app_while.so",
    "exitwhile": "app_while.so",
    "continuewhile": "app_while.so",
    "echo": "app_echo.so",
    "read": "app_read.so",
    "mixmonitor": "app_mixmonitor.so",
    "senddtmf": "app_senddtmf.so",
    "chanspy": "app_chanspy.so",
    "musiconhold": "res_musiconhold.so",
    "waitforsilence": "app_waitforsilence.so",
}
FUNCTION_MODULES: dict[str, str | None] = {
    "callerid": "func_callerid.so",
    "connectedline": "func_callerid.so",
    "channel": "func_channel.so",
    "if": "func_logic.so",
    "isnull": "func_logic.so",
    "exists": "func_logic.so",
    "regex": "func_strings.so",
    "strftime": "func_strings.so",
    "len": "func_strings.so",
    "fieldqty": "func_strings.so",
    "filter": "func_strings.so",
    "toupper": "func_strings.so",
    "tolower": "func_strings.so",
    "cut": "func_cut.so",
    "timeout": "func_timeout.so",
    "env": "func_env.so",
    "global": "func_global.so",
    "local": "app_stack.so",
    "queue_member": "app_queue.so",
    "queue_exists": "app_queue.so",
    "pjsip_header": "res_pjsip_header_funcs.so",
}

# ---------------------------------------------------------------------------- problems


@dataclass(frozen=True, order=True)
class Problem:
    file: str
    line: int
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: [{self.rule}] {self.message}"


# ---------------------------------------------------------------------------- the INI dialect


@dataclass
class Entry:
    key: str
    value: str
    op: str
    file: str
    line: int


@dataclass
class Section:
    name: str
    file: str
    line: int
    is_template: bool = False
    templates: tuple[str, ...] = ()
    entries: list[Entry] = field(default_factory=list)

    def get(self, key: str) -> str | None:
        values = self.values(key)
        return values[-1] if values else None

    def values(self, key: str) -> list[str]:
        return [e.value for e in self.entries if e.key.lower() == key.lower()]


@dataclass
class ConfFile:
    path: Path
    sections: list[Section] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def named(self, name: str) -> list[Section]:
        return [s for s in self.sections if s.name == name]

    def section(self, name: str) -> Section | None:
        found = self.named(name)
        return found[0] if found else None

    def effective(self, section: Section) -> list[Entry]:
        """The section's entries after its templates' (templates first, as Asterisk copies them)."""
        return [entry for _, entry in self.effective_origins(section)]

    def effective_origins(self, section: Section) -> list[tuple[Section, Entry]]:
        """effective(), each entry with the section (the template, or `section`) that wrote it."""
        entries: list[tuple[Section, Entry]] = []
        for template in section.templates:
            parent = next((s for s in self.sections if s.name == template and s.is_template), None)
            if parent is not None and parent is not section:
                entries.extend(self.effective_origins(parent))
        return entries + [(section, entry) for entry in section.entries]

    def effective_get(self, section: Section, key: str) -> str | None:
        values = [e.value for e in self.effective(section) if e.key.lower() == key.lower()]
        return values[-1] if values else None


_SECTION = re.compile(r"^\[([^\]]+)\]\s*(?:\(([^)]*)\))?\s*$")
_KEY_VALUE = re.compile(r"^([A-Za-z0-9_.()/\-]+)\s*(=>|=)\s*(.*)$")
_INCLUDE = re.compile(r'^#(include|tryinclude)\s+"?([^"]+?)"?\s*$')

Resolver = Callable[[Path, str], Path | None]


def _strip_comment(line: str) -> str:
    out = []
    i = 0
    while i < len(line):
        ch = line[i]
        if ch == "\\" and i + 1 < len(line):
            out.append(line[i : i + 2])
            i += 2
            continue
        if ch == ";":
            break
        out.append(ch)
        i += 1
    return "".join(out).rstrip()


def _default_resolver(including: Path, target: str) -> Path | None:
    candidate = Path(target) if target.startswith("/") else including.parent / target
    return candidate if candidate.exists() else None


def _lines(
    path: Path, resolver: Resolver, problems: list[Problem], depth: int = 0
) -> Iterator[tuple[str, int, str]]:
    """(file, line number, text without comments) with #include files expanded in place."""
    in_block = False
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text = raw
        if in_block:
            if "--;" not in text:
                continue
            text, in_block = text.split("--;", 1)[1], False
        if ";--" in text:
            head, _, tail = text.partition(";--")
            text, in_block = head, "--;" not in tail
        text = _strip_comment(text).strip()
        if not text:
            continue
        include = _INCLUDE.match(text)
        if include is None:
            yield str(path), number, text
            continue
        target = resolver(path, include.group(2))
        if target is None:
            if include.group(1) == "include":
                problems.append(
                    Problem(str(path), number, "include", f"#include {include.group(2)}: no such file")
                )
            continue
        if depth > 8:
            problems.append(Problem(str(path), number, "include", "#include nested too deeply (a cycle?)"))
            continue
        yield from _lines(target, resolver, problems, depth + 1)


def _open_section(match: re.Match[str], file: str, line: int, problems: list[Problem]) -> Section:
    options = [o.strip() for o in (match.group(2) or "").split(",") if o.strip()]
    flags = {"!", "+"}
    section = Section(
        match.group(1).strip(), file, line, "!" in options, tuple(o for o in options if o not in flags)
    )
    for option in section.templates:
        if not re.match(r"^[\w.\-]+$", option):
            problems.append(Problem(file, line, "syntax", f"[{section.name}]: bad template name {option!r}"))
    return section


def parse_conf(path: Path, resolver: Resolver = _default_resolver) -> ConfFile:
    """Sections and entries of one configuration file, its #includes expanded."""
    conf = ConfFile(path)
    current: Section | None = None
    for file, line, text in _lines(path, resolver, conf.problems):
        header = _SECTION.match(text)
        if header is not None:
            current = _open_section(header, file, line, conf.problems)
            conf.sections.append(current)
            continue
        pair = _KEY_VALUE.match(text)
        if pair is None:
            conf.problems.append(Problem(file, line, "syntax", f"not a [section] nor key = value: {text!r}"))
            continue
        if current is None:
            conf.problems.append(Problem(file, line, "syntax", f"{pair.group(1)!r} before any [section]"))
            continue
        current.entries.append(Entry(pair.group(1), pair.group(3).strip(), pair.group(2), file, line))
    return conf


def check_structure(
    conf: ConfFile, repeatable: frozenset[str], unique_sections: bool = True
) -> list[Problem]:
    """Duplicate keys (outside `repeatable`), duplicate sections, templates that do not exist."""
    problems: list[Problem] = []
    templates = {s.name for s in conf.sections if s.is_template}
    seen: dict[str, Section] = {}
    for section in conf.sections:
        if unique_sections and section.name in seen:
            first = seen[section.name]
            problems.append(
                Problem(
                    section.file,
                    section.line,
                    "duplicate-section",
                    f"[{section.name}] already at line {first.line}",
                )
            )
        seen.setdefault(section.name, section)
        for template in section.templates:
            if template not in templates:
                problems.append(
                    Problem(
                        section.file,
                        section.line,
                        "template",
                        f"[{section.name}] uses unknown template {template!r}",
                    )
                )
        keys: dict[str, Entry] = {}
        for entry in section.entries:
            lowered = entry.key.lower()
            if lowered in keys and lowered not in repeatable:
                problems.append(
                    Problem(
                        entry.file,
                        entry.line,
                        "duplicate-key",
                        f"[{section.name}] {entry.key} set twice (first at line {keys[lowered].line})",
                    )
                )
            keys.setdefault(lowered, entry)
    return problems


# ---------------------------------------------------------------------------- expressions


def _opener(text: str, opener: str, at: int) -> str:
    return "$" + opener if opener in "{[" and text[at - 1 : at] == "$" else opener


def balance_problem(text: str) -> str | None:
    """Why `text` has unbalanced (), [], {}, ${}, $[] or double quotes; None when it is fine."""
    closing = {")": "(", "]": "[", "}": "{"}
    stack: list[tuple[str, int]] = []
    escaped = False
    quotes = 0
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
            continue
        if ch == "\\":
            escaped = True
        elif ch == '"':
            quotes += 1
        elif ch in "([{":
            stack.append((ch, i))
        elif ch in closing:
            if not stack:
                return f"{ch!r} at column {i + 1} closes nothing"
            if stack[-1][0] != closing[ch]:
                opener, at = stack[-1]
                still_open = _opener(text, opener, at)
                return f"{ch!r} at column {i + 1} while {still_open!r} opened at column {at + 1} is open"
            stack.pop()
    if stack:
        opener, at = stack[-1]
        return f"{_opener(text, opener, at)!r} opened at column {at + 1} is never closed"
    if quotes % 2:
        return "odd number of double quotes"
    return None


def split_top(text: str, sep: str) -> list[str]:
    """Split on `sep` outside (), [], {} and double quotes, as Asterisk splits application arguments."""
    parts: list[str] = []
    depth = 0
    quoted = False
    current: list[str] = []
    escaped = False
    for ch in text:
        if escaped:
            current.append(ch)
            escaped = False
            continue
        if ch == "\\":
            escaped = True
            current.append(ch)
            continue
        if ch == '"':
            quoted = not quoted
        elif ch in "([{" and not quoted:
            depth += 1
        elif ch in ")]}" and not quoted:
            depth -= 1
        if ch == sep and depth == 0 and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return parts


_FUNCTION_CALL = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\(")


def functions_used(text: str) -> list[str]:
    return [m.group(1) for m in _FUNCTION_CALL.finditer(text)]


def is_dynamic(text: str) -> bool:
    return "${" in text or "$[" in text


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """An Asterisk extension (literal, or `_` pattern with X Z N [...] . !) as a regex."""
    if not pattern.startswith("_"):
        return re.compile(re.escape(pattern) + "$", re.IGNORECASE)
    out: list[str] = []
    body = pattern[1:]
    i = 0
    while i < len(body):
        ch = body[i]
        upper = ch.upper()
        if upper in "XZN":
            out.append({"X": "[0-9]", "Z": "[1-9]", "N": "[2-9]"}[upper])
        elif ch == "[":
            end = body.index("]", i)
            out.append("[" + body[i + 1 : end].replace("\\", "\\\\") + "]")
            i = end
        elif ch == ".":
            out.append(".+")
        elif ch == "!":
            out.append(".*")
        else:
            out.append(re.escape(ch))
        i += 1
    return re.compile("".join(out) + "$")


# ---------------------------------------------------------------------------- the dialplan


@dataclass
class Step:
    """One priority of one extension."""

    priority: int
    label: str | None
    app: str
    args: str
    file: str
    line: int


@dataclass
class Extension:
    pattern: str
    file: str
    line: int
    steps: list[Step] = field(default_factory=list)
    hint: str | None = None

    def matches(self, exten: str) -> bool:
        return bool(pattern_regex(self.pattern).match(exten))

    def has_priority(self, spec: str) -> bool:
        if spec.isdigit():
            return any(s.priority == int(spec) for s in self.steps)
        return any(s.label == spec for s in self.steps)


@dataclass
class Context:
    name: str
    file: str
    line: int
    extensions: dict[str, Extension] = field(default_factory=dict)
    includes: list[tuple[str, str, int]] = field(default_factory=list)


@dataclass
class Dialplan:
    contexts: dict[str, Context] = field(default_factory=dict)
    globals: dict[str, str] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def steps(self) -> Iterator[tuple[Context, Extension, Step]]:
        for context in self.contexts.values():
            for extension in context.extensions.values():
                for step in extension.steps:
                    yield context, extension, step

    def find(self, context: str, exten: str, seen: frozenset[str] = frozenset()) -> Extension | None:
        """The extension `exten` resolves to in `context` (literal first, then patterns, then includes)."""
        ctx = self.contexts.get(context)
        if ctx is None or context in seen:
            return None
        if exten in ctx.extensions:
            return ctx.extensions[exten]
        for extension in ctx.extensions.values():
            if extension.pattern.startswith("_") and extension.matches(exten):
                return extension
        for included, _, _ in ctx.includes:
            found = self.find(included, exten, seen | {context})
            if found is not None:
                return found
        return None


_PRIORITY = re.compile(r"^(\d+|n)(?:\(([A-Za-z0-9_\-]+)\))?$")
_APP = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*(?:\((.*)\))?$", re.DOTALL)


class _DialplanBuilder:
    def __init__(self, dialplan: Dialplan) -> None:
        self.dialplan = dialplan
        self.context: Context | None = None
        self.extension: Extension | None = None

    def problem(self, entry: Entry, rule: str, message: str) -> None:
        self.dialplan.problems.append(Problem(entry.file, entry.line, rule, message))

    def add(self, context: Context, entry: Entry) -> None:
        if self.context is not context:
            self.context, self.extension = context, None
        key = entry.key.lower()
        if key == "exten":
            self._exten(context, entry)
        elif key == "same":
            self._same(entry)
        elif key == "include":
            context.includes.append((entry.value.strip(), entry.file, entry.line))
        elif key not in ("switch", "ignorepat"):
            self.problem(entry, "syntax", f"unknown dialplan keyword {entry.key!r}")

    def _exten(self, context: Context, entry: Entry) -> None:
        parts = entry.value.split(",", 2)
        if len(parts) < 3:
            self.problem(entry, "syntax", f"exten needs pattern,priority,application: {entry.value!r}")
            return
        pattern, priority, app = (p.strip() for p in parts)
        pattern = pattern.split("/", 1)[0]  # exten => s/CALLERID,... matches on caller ID too
        extension = context.extensions.get(pattern)
        if extension is None:
            extension = Extension(pattern, entry.file, entry.line)
            context.extensions[pattern] = extension
        if priority == "hint":
            extension.hint = app
            return
        self.extension = extension
        if _PRIORITY.match(priority) and priority.split("(")[0] != "1" and not extension.steps:
            self.problem(entry, "priority", f"extension {pattern} must start at priority 1, not {priority}")
        self._step(extension, priority, app, entry)

    def _same(self, entry: Entry) -> None:
        if self.extension is None:
            self.problem(entry, "syntax", "`same =>` with no `exten =>` before it in this context")
            return
        priority, _, app = entry.value.partition(",")
        self._step(self.extension, priority.strip(), app.strip(), entry)

    def _step(self, extension: Extension, priority: str, app: str, entry: Entry) -> None:
        match = _PRIORITY.match(priority)
        if match is None:
            self.problem(
                entry, "priority", f"bad priority {priority!r} (a number or n, with an optional (label))"
            )
            return
        previous = extension.steps[-1].priority if extension.steps else 0
        number = previous + 1 if match.group(1) == "n" else int(match.group(1))
        if number <= previous:
            self.problem(
                entry, "priority", f"priority {number} of {extension.pattern} does not follow {previous}"
            )
        label = match.group(2)
        if label and any(s.label == label for s in extension.steps):
            self.problem(entry, "priority", f"label {label!r} used twice in extension {extension.pattern}")
        unbalanced = balance_problem(app)
        if unbalanced:
            self.problem(entry, "balance", f"{app!r}: {unbalanced}")
            return
        call = _APP.match(app)
        if call is None:
            self.problem(entry, "syntax", f"not an application call: {app!r}")
            return
        extension.steps.append(
            Step(number, label, call.group(1), call.group(2) or "", entry.file, entry.line)
        )


def parse_dialplan(conf: ConfFile) -> Dialplan:
    """The contexts of an extensions.conf (already parsed as INI, #includes expanded)."""
    dialplan = Dialplan()
    builder = _DialplanBuilder(dialplan)
    for section in conf.sections:
        if section.name == "general":
            continue
        if section.name == "globals":
            dialplan.globals.update({e.key: e.value for e in section.entries})
            continue
        if section.name in dialplan.contexts:
            dialplan.problems.append(
                Problem(
                    section.file, section.line, "duplicate-section", f"context [{section.name}] defined twice"
                )
            )
            continue
        context = Context(section.name, section.file, section.line)
        dialplan.contexts[section.name] = context
        for entry in section.entries:
            builder.add(context, entry)
    return dialplan


# ---------------------------------------------------------------------------- dialplan rules


def _target(context: str, exten: str, spec: str) -> tuple[str, str, str] | None:
    parts = [p.strip() for p in split_top(spec, ",")]
    if len(parts) == 1:
        return context, exten, parts[0]
    if len(parts) == 2:
        return context, parts[0], parts[1]
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    return None


def _branch_specs(app: str, args: str) -> list[str]:
    """The jump targets written in a Goto-family application's arguments."""
    lowered = app.lower()
    if lowered in ("goto", "gosub"):
        return [args]
    if lowered in ("gotoif", "gotoiftime", "gosubif"):
        question = split_top(args, "?")
        if len(question) < 2:
            return []
        return [b for b in split_top("?".join(question[1:]), ":") if b.strip()]
    return []


def _jump_problem(dialplan: Dialplan, target: tuple[str, str, str]) -> str | None:
    context, exten, priority = target
    priority = re.sub(r"\(.*\)$", "", priority)  # Gosub(ctx,exten,1(arguments))
    if is_dynamic(context):
        return None
    if context not in dialplan.contexts:
        return f"context {context!r} does not exist"
    if is_dynamic(exten) or is_dynamic(priority):
        return None
    extension = dialplan.find(context, exten)
    if extension is None:
        return f"no extension {exten!r} in context {context!r}"
    if not extension.has_priority(priority):
        return f"extension {exten!r} of {context!r} has no priority or label {priority!r}"
    return None


def _dial_handler_targets(args: str) -> list[str]:
    parts = split_top(args, ",")
    if len(parts) < 3:
        return []
    return [m.group(1).replace("^", ",") for m in re.finditer(r"[bBU]\(([^)]*)\)", parts[2])]


def check_jumps(dialplan: Dialplan) -> list[Problem]:
    problems: list[Problem] = []
    for context, extension, step in dialplan.steps():
        specs = _branch_specs(step.app, step.args)
        if step.app.lower() == "dial":
            specs += _dial_handler_targets(step.args)
        for spec in specs:
            exten = extension.pattern if not extension.pattern.startswith("_") else "${EXTEN}"
            target = _target(context.name, exten, spec.strip())
            why = "bad jump target" if target is None else _jump_problem(dialplan, target)
            if why:
                problems.append(Problem(step.file, step.line, "goto", f"{step.app}({step.args}): {why}"))
    for context in dialplan.contexts.values():
        for included, file, line in context.includes:
            if included not in dialplan.contexts:
                problems.append(Problem(file, line, "goto", f"include => {included}: no such context"))
    return problems


def check_applications(dialplan: Dialplan, loaded: frozenset[str] | None) -> list[Problem]:
    """Every application and function is known, and (when `loaded` is given) its module loaded."""
    problems: list[Problem] = []
    for _, _, step in dialplan.steps():
        apps = [step.app, *_inner_apps(step)]
        for app in apps:
            if app.lower() not in APP_MODULES:
                problems.append(Problem(step.file, step.line, "application", f"unknown application {app}()"))
                continue
            problems += _module_problem(step, f"{app}()", APP_MODULES[app.lower()], loaded)
        for function in _functions(step):
            if function.lower() not in FUNCTION_MODULES:
                problems.append(
                    Problem(step.file, step.line, "function", f"unknown dialplan function {function}()")
                )
                continue
            problems += _module_problem(step, f"{function}()", FUNCTION_MODULES[function.lower()], loaded)
    return problems


def _inner_apps(step: Step) -> list[str]:
    if step.app.lower() != "execif":
        return []
    question = split_top(step.args, "?")
    branches = split_top("?".join(question[1:]), ":") if len(question) > 1 else []
    return [m.group(1) for b in branches if (m := _APP.match(b.strip()))]


def _functions(step: Step) -> list[str]:
    found = functions_used(step.args)
    if step.app.lower() == "set":
        left = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)\(", step.args)
        if left:
            found.append(left.group(1))
    return found


def _module_problem(
    step: Step, what: str, module: str | None, loaded: frozenset[str] | None
) -> list[Problem]:
    if module is None or loaded is None or module in loaded:
        return []
    return [
        Problem(step.file, step.line, "module", f"{what} needs {module}, which modules.conf does not load")
    ]


def _user_event(step: Step) -> tuple[str, list[tuple[str, str]], list[str]]:
    """Name, (header, value) pairs and malformed pieces of a UserEvent's arguments."""
    parts = split_top(step.args, ",")
    headers: list[tuple[str, str]] = []
    bad: list[str] = []
    for part in parts[1:]:
        key, colon, value = part.partition(":")
        if not colon or not re.match(r"^[A-Za-z][A-Za-z0-9_-]*$", key.strip()):
            bad.append(part)
            continue
        headers.append((key.strip(), value.strip()))
    return parts[0].strip(), headers, bad


def check_user_events(dialplan: Dialplan) -> list[Problem]:
    problems: list[Problem] = []
    for _, _, step in dialplan.steps():
        if step.app.lower() != "userevent":
            continue
        name, headers, bad = _user_event(step)
        where = (step.file, step.line, "user-event")
        for piece in bad:
            problems.append(Problem(*where, f"UserEvent({name}): {piece!r} is not a 'Header: value' pair"))
        if name not in TRACKED_USER_EVENTS:
            problems.append(
                Problem(
                    *where,
                    f"UserEvent {name!r} is not read by cti (TRACKED_USER_EVENTS: "
                    f"{', '.join(sorted(TRACKED_USER_EVENTS))})",
                )
            )
            continue
        problems += [
            Problem(*where, f"UserEvent({name}): {why}") for why in _event_problems(name, dict(headers))
        ]
        if len({k for k, _ in headers}) != len(headers):
            problems.append(Problem(*where, f"UserEvent({name}): a header is repeated"))
    return problems


def _event_problems(name: str, headers: dict[str, str]) -> list[str]:
    spec = USER_EVENT_SPECS[name]
    allowed = spec.required | spec.optional | spec.one_of
    why = [f"missing header {h}:" for h in sorted(spec.required - set(headers))]
    why += [
        f"unexpected header {h}: (cti reads {', '.join(sorted(allowed))})"
        for h in headers
        if h not in allowed
    ]
    if spec.one_of and len(spec.one_of & set(headers)) != 1:
        why.append(f"needs exactly one of {', '.join(sorted(spec.one_of))}")
    why += [
        f"{h}: must be {v} (got {headers[h]!r})" for h, v in spec.fixed if h in headers and headers[h] != v
    ]
    if name == "IVR":
        why += _ivr_value_problems(headers)
    return why


def _ivr_value_problems(headers: dict[str, str]) -> list[str]:
    why = []
    menu = headers.get("Menu", "")
    if not _MENU_NAME.match(menu):
        why.append(f"Menu: must be a literal lower-case name, got {menu!r}")
    if "Invalid" in headers and headers["Invalid"] != IVR_INVALID_VALUE:
        why.append(f"Invalid: must be {IVR_INVALID_VALUE}")
    if "Timeout" in headers and headers["Timeout"] != IVR_TIMEOUT_VALUE:
        why.append(f"Timeout: must be {IVR_TIMEOUT_VALUE}")
    for key in ("Choice", "Step"):
        if key in headers and (not headers[key] or is_dynamic(headers[key])):
            why.append(f"{key}: must be a literal value, got {headers[key]!r}")
    return why


def check_queues_used(dialplan: Dialplan, queues: frozenset[str]) -> list[Problem]:
    """Queue() targets exist and each Queue() is followed by UserEvent(QueueExit) for that queue."""
    problems: list[Problem] = []
    for _, extension, step in dialplan.steps():
        lowered = step.app.lower()
        if lowered not in ("queue", "addqueuemember", "removequeuemember"):
            continue
        target = split_top(step.args, ",")[0].strip()
        runtime = re.fullmatch(r"\$\{([A-Za-z0-9_]+)\}", target)
        if lowered == "queue" and runtime and runtime.group(1) in RUNTIME_QUEUE_VARIABLES:
            pass
        elif not is_dynamic(target) and target not in queues:
            problems.append(
                Problem(step.file, step.line, "queue", f"{step.app}: no queue {target!r} in queues.conf")
            )
        elif lowered == "queue" and is_dynamic(target):
            problems.append(
                Problem(
                    step.file,
                    step.line,
                    "queue",
                    f"Queue({target}): write the queue name, or use one of "
                    f"{', '.join(sorted(RUNTIME_QUEUE_VARIABLES))}, so it can be checked",
                )
            )
        if lowered == "queue":
            problems += _queue_exit_problem(extension, step, target)
    return problems


def _queue_exit_problem(extension: Extension, step: Step, target: str) -> list[Problem]:
    following = [s for s in extension.steps if s.priority == step.priority + 1]
    if following and following[0].app.lower() == "userevent":
        name, headers, _ = _user_event(following[0])
        if name == "QueueExit" and dict(headers).get("Queue") == target:
            return []
    message = (
        f"Queue({target}) must be followed by UserEvent(QueueExit,Queue: {target},Status: ${{QUEUESTATUS}})"
    )
    return [Problem(step.file, step.line, "queue-exit", message)]


def check_originate_contexts(dialplan: Dialplan, path: str) -> list[Problem]:
    problems = []
    for context in sorted(ORIGINATE_CONTEXTS):
        exten = ORIGINATE_EXTENSIONS.get(context, "s")
        if context not in dialplan.contexts:
            problems.append(
                Problem(path, 0, "originate", f"context {context!r}, which cti originates into, is missing")
            )
        elif dialplan.find(context, exten) is None:
            problems.append(
                Problem(path, 0, "originate", f"context {context!r} does not accept extension {exten!r}")
            )
    return problems


# Routes of cti's FastAGI server (src/cti/agi/), reached as AGI(agi://${CTI_AGI_HOST}/ROUTE,...).
FASTAGI_ROUTES = frozenset({"lookup"})
LOOKUP_NAME_POLICIES = frozenset({"ifunknown", "always", "never"})


def check_agi(dialplan: Dialplan) -> list[Problem]:
    """AGI() calls to cti go to its FastAGI server, with a route it serves and a known policy."""
    problems: list[Problem] = []
    for _, _, step in dialplan.steps():
        if step.app.lower() != "agi":
            continue
        args = [a.strip() for a in split_top(step.args, ",")]
        where = (step.file, step.line, "agi")
        if args[0].rsplit("/", 1)[-1].lower() == "cti-agi":
            problems.append(
                Problem(*where, "the cti-agi script is gone: AGI(agi://${CTI_AGI_HOST}/lookup,REGION)")
            )
        if not args[0].startswith("agi://${CTI_AGI_HOST}"):
            continue
        route = args[0].removeprefix("agi://${CTI_AGI_HOST}").lstrip("/").split("?", 1)[0]
        if route not in FASTAGI_ROUTES:
            problems.append(Problem(*where, f"cti's FastAGI server has no route {route!r} (only: lookup)"))
        policy = args[2].lower() if len(args) > 2 else "ifunknown"
        if not is_dynamic(policy) and policy not in LOOKUP_NAME_POLICIES:
            problems.append(Problem(*where, f"name policy {args[2]!r}: ifunknown, always or never"))
    return problems


# ---------------------------------------------------------------------------- file rules


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("yes", "true", "on", "1", "y")


def _unknown_keys(section: Section, known: frozenset[str], label: str) -> list[Problem]:
    return [
        Problem(e.file, e.line, "unknown-key", f"[{section.name}] unknown {label} option {e.key!r}")
        for e in section.entries
        if e.key.lower() not in known
    ]


MODULES_KEYS = frozenset({"autoload", "load", "noload", "preload", "require", "preload-require"})


def check_modules(conf: ConfFile, table: ModuleTable | None = None) -> tuple[list[Problem], frozenset[str]]:
    table = table or module_table()
    problems = check_structure(conf, frozenset({"load", "noload", "preload", "require", "preload-require"}))
    section = conf.section("modules")
    if section is None:
        return [*problems, Problem(str(conf.path), 0, "modules", "no [modules] section")], frozenset()
    problems += _unknown_keys(section, MODULES_KEYS, "modules.conf")
    problems += [
        Problem(s.file, s.line, "unknown-section", f"[{s.name}]")
        for s in conf.sections
        if s.name != "modules"
    ]
    if (section.get("autoload") or "").lower() != "no":
        problems.append(
            Problem(section.file, section.line, "modules", "autoload = no: load only what is listed")
        )
    loaded: dict[str, Entry] = {}
    for entry in section.entries:
        if entry.key.lower() not in ("load", "noload", "preload", "require", "preload-require"):
            continue
        if not entry.value.endswith(".so"):
            problems.append(
                Problem(entry.file, entry.line, "modules", f"{entry.value!r}: module names end in .so")
            )
        if entry.value in REMOVED_MODULES:
            problems.append(
                Problem(entry.file, entry.line, "modules", f"{entry.value}: {REMOVED_MODULES[entry.value]}")
            )
        elif not table.exists(entry.value):
            problems.append(
                Problem(entry.file, entry.line, "module-unknown", _unknown_module(entry.value, table))
            )
        if entry.key.lower() == "noload":
            continue
        if entry.value in loaded:
            problems.append(Problem(entry.file, entry.line, "duplicate-key", f"{entry.value} loaded twice"))
        loaded.setdefault(entry.value, entry)
    problems += _module_dependencies(loaded, table)
    for module in sorted(REQUIRED_MODULES - set(loaded)):
        problems.append(
            Problem(section.file, section.line, "modules", f"{module} is required by cti and not loaded")
        )
    return problems, frozenset(loaded)


def _unknown_module(name: str, table: ModuleTable) -> str:
    if name.removesuffix(".so") in table.builtin:
        return f"{name}: part of the asterisk binary in Asterisk {table.version}, not a module to load"
    return f"{name}: no such module in Asterisk {table.version} (a typo, or a module removed in 21+)"


def _module_dependencies(loaded: dict[str, Entry], table: ModuleTable) -> list[Problem]:
    """Every module a loaded module requires (AST_MODULE_INFO .requires/.enhances), transitively, is
    loaded too: main/loader.c declines a module whose dependency is not running ("missing
    dependency: ..."), and so every module that requires that one in turn. Each missing module is
    reported once, with every chain of modules that needs it (a loaded dependency's own
    dependencies are checked on its own line)."""
    missing: dict[str, list[tuple[Entry, list[str]]]] = {}
    for module, entry in loaded.items():
        name = module.removesuffix(".so")
        pending = [[name, dep] for dep in table.requires.get(name, ())]
        seen: set[str] = set()
        while pending:
            path = pending.pop(0)
            dep = path[-1]
            if dep in seen or dep in table.builtin or dep + ".so" in loaded:
                continue
            seen.add(dep)
            missing.setdefault(dep, []).append((entry, path))
            pending += [[*path, d] for d in table.requires.get(dep, ())]
    problems = []
    for dep, needers in missing.items():
        entry = needers[0][0]
        who = "; ".join(" needs ".join(f"{m}.so" for m in path) for _, path in needers)
        problems.append(
            Problem(
                entry.file,
                entry.line,
                "module-deps",
                f"{dep}.so is not loaded, and {who} (AST_MODULE_INFO .requires in Asterisk {table.version}): "
                f'the loader declines what needs it with "missing dependency: {dep}"',
            )
        )
    return problems


# main/manager.c __init_manager(): its own keys, and the TLS ones ast_tls_read_conf() knows except
# tlscafile, tlscapath, tlscadir, tlsverifyclient, tlsdontverifyserver, tls/sslclientmethod, which
# manager.conf refuses ("Invalid keyword"): the AMI server does not verify clients.
MANAGER_GENERAL_KEYS = _words(
    "enabled webenabled port bindaddr timestampevents displayconnects allowmultiplelogin authtimeout "
    "authlimit httptimeout channelvars debug brokeneventsaction disabledevents tlsenable sslenable "
    "tlsbindaddr sslbindaddr tlscertfile sslcert tlscert tlsprivatekey sslprivatekey tlscipher sslcipher "
    "tlsservercipherorder tlsdisablev1 tlsdisablev11 tlsdisablev12"
)
MANAGER_USER_KEYS = _words(
    "secret deny permit acl read write writetimeout displayconnects allowmultiplelogin eventfilter setvar"
)


def _classes(value: str | None) -> set[str]:
    return {c.strip().lower() for c in (value or "").split(",") if c.strip()}


def check_manager(conf: ConfFile, user: str = "cti") -> list[Problem]:
    problems = check_structure(conf, frozenset({"permit", "deny", "acl", "eventfilter", "setvar"}))
    general = conf.section("general")
    path = str(conf.path)
    if general is None:
        problems.append(Problem(path, 0, "manager", "no [general] section"))
    else:
        problems += _unknown_keys(general, MANAGER_GENERAL_KEYS, "manager.conf [general]")
        if not _truthy(general.get("timestampevents")):
            problems.append(
                Problem(general.file, general.line, "manager", "timestampevents = yes (cti uses Timestamp:)")
            )
        if not _truthy(general.get("enabled")):
            problems.append(Problem(general.file, general.line, "manager", "enabled = yes"))
    section = conf.section(user)
    if section is None:
        return [*problems, Problem(path, 0, "manager", f"no [{user}] user for the cti daemon")]
    problems += _unknown_keys(section, MANAGER_USER_KEYS, "manager.conf user")
    problems += _manager_acl(section)
    problems += _manager_classes(section)
    if section.get("secret") is not None:
        problems.append(
            Problem(
                section.file,
                section.line,
                "manager",
                f"[{user}]: keep the secret out of the shipped file (manager_cti_local.conf)",
            )
        )
    return problems


def _manager_acl(section: Section) -> list[Problem]:
    acl = [e for e in section.entries if e.key.lower() in ("deny", "permit")]
    problems = []
    if not acl or acl[0].key.lower() != "deny" or not acl[0].value.startswith("0.0.0.0/0"):
        problems.append(
            Problem(section.file, section.line, "manager-acl", "start the ACL with deny = 0.0.0.0/0.0.0.0")
        )
    for entry in acl:
        if entry.key.lower() == "permit" and entry.value.replace(" ", "") in ("0.0.0.0/0", "0.0.0.0/0.0.0.0"):
            problems.append(
                Problem(entry.file, entry.line, "manager-acl", "permit = 0.0.0.0/0 lets anyone log in")
            )
    if not any(e.key.lower() == "permit" for e in acl):
        problems.append(
            Problem(section.file, section.line, "manager-acl", "no permit line: nobody can log in")
        )
    return problems


def _manager_classes(section: Section) -> list[Problem]:
    problems: list[Problem] = []
    read, write = _classes(section.get("read")), _classes(section.get("write"))
    where = (section.file, section.line)
    for kind, granted in (("read", read), ("write", write)):
        for name in sorted(granted - AMI_CLASSES):
            problems.append(Problem(*where, "manager-classes", f"{kind}: unknown class {name!r}"))
    needed_read = set(TRACKER_EVENT_CLASSES.values())
    if "all" in read or "all" in write:
        problems.append(
            Problem(*where, "manager-classes", "read/write = all: list the classes cti needs instead")
        )
    for name in sorted(needed_read - read):
        problems.append(
            Problem(*where, "manager-classes", f"read lacks {name!r}: the tracker reads events of it")
        )
    for name in sorted(read - needed_read - {"all"}):
        problems.append(Problem(*where, "manager-classes", f"read grants {name!r}, which cti never reads"))
    for action, classes in sorted(DAEMON_ACTIONS.items()):
        if classes and not classes & write:
            problems.append(
                Problem(
                    *where,
                    "manager-classes",
                    f"write allows no class of {action} ({', '.join(sorted(classes))})",
                )
            )
    used = set().union(*DAEMON_ACTIONS.values())
    for name in sorted(write & FORBIDDEN_WRITE_CLASSES - {"all"}):
        problems.append(
            Problem(*where, "manager-classes", f"write grants {name!r}: far more power than cti needs")
        )
    for name in sorted(write - used - FORBIDDEN_WRITE_CLASSES):
        problems.append(
            Problem(*where, "manager-classes", f"write grants {name!r}, which no cti action needs")
        )
    return problems


# What app_queue reads (apps/app_queue.c of 22.10.1): [general] in queue_set_global_params(), which
# ignores anything else without a word; a queue's keys in queue_set_param() ("Unknown keyword" for
# the rest), `member` in reload_single_member().
QUEUE_GENERAL_KEYS = _words(
    "persistentmembers autofill monitor-type shared_lastcall negative_penalty_invalid "
    "log_membername_as_agent force_longest_waiting_caller log_unpause_on_reason_change log-caller-id-name"
)
QUEUE_KEYS = _words(
    "musicclass music musiconhold announce strategy servicelevel context penaltymemberslimit timeout "
    "retry timeoutpriority weight wrapuptime autofill autopause autopausedelay autopausebusy "
    "autopauseunavail maxlen "
    "announce-frequency min-announce-frequency announce-round-seconds announce-holdtime "
    "announce-position announce-position-limit announce-position-only-up announce-to-first-user "
    "periodic-announce periodic-announce-frequency periodic-announce-startdelay random-periodic-announce "
    "relative-periodic-announce queue-youarenext queue-thereare queue-callswaiting queue-quantity1 "
    "queue-quantity2 queue-holdtime queue-minute queue-minutes queue-seconds queue-thankyou queue-reporthold "
    "queue-callerannounce reportholdtime ringinuse memberdelay timeoutrestart defaultrule membergosub "
    "setinterfacevar setqueuevar setqueueentryvar joinempty leavewhenempty log-restricted-caller-id member"
)
QUEUE_STRATEGIES = _words("ringall leastrecent fewestcalls random rrmemory rrordered linear wrandom")
# Keys a later line does not simply override. reload_single_queue() reads `strategy` once, with
# ast_variable_retrieve(), which returns the FIRST strategy= of the queue's entries (its templates'
# come first), and queue_set_param() then skips every strategy= of a static queue. joinempty and
# leavewhenempty are ORed into the conditions the lines before set (parse_empty_options), unless the
# value starts with one of EMPTY_RESETS. Every other key: the last line wins.
QUEUE_FIRST_WINS = frozenset({"strategy"})
MUSIC_KEYS = _words("musicclass music musiconhold")
QUEUE_ACCUMULATED = frozenset({"joinempty", "leavewhenempty"})
EMPTY_CONDITIONS = _words("paused penalty inuse ringing invalid wrapup unavailable unknown")
_TRUE = _words("yes true y t 1 on")  # ast_true()
_FALSE = _words("no false n f 0 off")  # ast_false()
EMPTY_RESETS = _words("loose strict") | _TRUE | _FALSE
# Values app_queue parses without complaint, reading anything else as false/0/the default.
QUEUE_BOOLEAN_KEYS = _words(
    "ringinuse setinterfacevar setqueuevar setqueueentryvar announce-to-first-user autofill autopausebusy "
    "autopauseunavail reportholdtime timeoutrestart relative-periodic-announce random-periodic-announce "
    "announce-position-only-up log-restricted-caller-id"
)
QUEUE_INTEGER_KEYS = _words(
    "timeout retry wrapuptime servicelevel maxlen weight memberdelay announce-frequency "
    "min-announce-frequency periodic-announce-frequency periodic-announce-startdelay autopausedelay "
    "announce-position-limit penaltymemberslimit"
)
QUEUE_CHOICES = {
    "announce-holdtime": _TRUE | _FALSE | {"once"},
    "announce-position": _TRUE | _FALSE | {"limit", "more"},
    "autopause": _TRUE | _FALSE | {"all"},
    "timeoutpriority": _words("app conf"),
    "announce-round-seconds": _words("0 5 10 15 20 30"),
}


def check_queues(
    conf: ConfFile, moh_classes: frozenset[str] | None = None
) -> tuple[list[Problem], frozenset[str]]:
    """queues.conf; `moh_classes` (from musiconhold.conf, when there is one) checks musicclass."""
    problems = check_structure(conf, frozenset({"member"}))
    queues: set[str] = set()
    for section in conf.sections:
        if section.name == "general":
            problems += _obsolete(section) + _unknown_keys(
                _without(section, OBSOLETE_QUEUE_KEYS), QUEUE_GENERAL_KEYS, "queues.conf [general]"
            )
            continue
        problems += _obsolete(section)
        problems += _unknown_keys(_without(section, OBSOLETE_QUEUE_KEYS), QUEUE_KEYS, "queue")
        problems += _queue_values(conf, section) + _queue_typed_values(section, moh_classes)
        if not section.is_template:
            problems += _queue_overrides(conf, section) + _queue_announce_limit(conf, section)
            queues.add(section.name)
    return problems, frozenset(queues)


def _origin(section: Section, origin: Section, entry: Entry) -> str:
    return f"line {entry.line}" if origin is section else f"template {origin.name}, line {entry.line}"


def _queue_overrides(conf: ConfFile, section: Section) -> list[Problem]:
    """Keys set more than once in a queue's entries (templates' first) that app_queue does not
    replace with the later value: QUEUE_FIRST_WINS, QUEUE_ACCUMULATED."""
    problems = []
    entries = conf.effective_origins(section)
    for key in sorted(QUEUE_FIRST_WINS):
        found = [(origin, e) for origin, e in entries if e.key.lower() == key]
        for _, entry in found[1:]:
            origin, first = found[0]
            problems.append(
                Problem(
                    entry.file,
                    entry.line,
                    "queue-override",
                    f"[{section.name}] app_queue keeps the first {key}= of a queue (reload_single_queue "
                    f"reads it with ast_variable_retrieve), here {first.value} from "
                    f"{_origin(section, origin, first)}; {key} = {entry.value} on line {entry.line} "
                    "is ignored",
                )
            )
    for key in sorted(QUEUE_ACCUMULATED):
        found = [(origin, e) for origin, e in entries if e.key.lower() == key]
        for (origin, before), (_, entry) in itertools.pairwise(found):
            if entry.value.split(",")[0].strip().lower() in EMPTY_RESETS:
                continue
            problems.append(
                Problem(
                    entry.file,
                    entry.line,
                    "queue-override",
                    f"[{section.name}] {key} = {entry.value} on line {entry.line} is added to "
                    f"{before.value} ({_origin(section, origin, before)}), not put in its place: "
                    f"app_queue ORs each {key}= into the conditions before it (parse_empty_options). "
                    f"Set the whole list once, or start it with strict, loose, yes or no",
                )
            )
    return problems


def _queue_typed_values(section: Section, moh_classes: frozenset[str] | None) -> list[Problem]:
    """Values app_queue would read as something else without a word: a boolean that is neither
    true nor false, a number atoi() cuts, an unknown choice or joinempty condition, a missing
    music class."""
    problems = []
    for entry in section.entries:
        key, value = entry.key.lower(), entry.value.strip().lower()
        why = None
        if key in QUEUE_BOOLEAN_KEYS and value not in _TRUE | _FALSE:
            why = "is neither yes nor no: app_queue reads it as no"
        elif key in QUEUE_INTEGER_KEYS and not re.fullmatch(r"-?\d+", value):
            why = "is not a whole number: app_queue reads atoi() of it"
        elif key in QUEUE_CHOICES and value not in QUEUE_CHOICES[key]:
            why = f"is not one of {', '.join(sorted(QUEUE_CHOICES[key]))}"
        elif key in QUEUE_ACCUMULATED:
            unknown = [c for c in value.split(",") if c.strip() not in EMPTY_CONDITIONS | EMPTY_RESETS]
            why = f"has unknown conditions {unknown} (app_queue skips them)" if unknown else None
        elif key in MUSIC_KEYS and moh_classes is not None and entry.value not in moh_classes:
            why = "is no class of musiconhold.conf: Asterisk plays the 'default' class instead"
        if why:
            problems.append(
                Problem(
                    entry.file,
                    entry.line,
                    "queue-value",
                    f"[{section.name}] {entry.key} = {entry.value} {why}",
                )
            )
    return problems


def _queue_announce_limit(conf: ConfFile, section: Section) -> list[Problem]:
    position = (conf.effective_get(section, "announce-position") or "yes").lower()
    limit = conf.effective_get(section, "announce-position-limit")
    if position in ("limit", "more") and limit is None:
        why = f"announce-position = {position} without announce-position-limit: app_queue uses 10"
    elif position not in ("limit", "more") and limit is not None:
        why = f"announce-position-limit = {limit} is unused unless announce-position is limit or more"
    else:
        return []
    return [Problem(section.file, section.line, "queue-value", f"[{section.name}] {why}")]


def _without(section: Section, keys: dict[str, str]) -> Section:
    return Section(
        section.name,
        section.file,
        section.line,
        entries=[e for e in section.entries if e.key.lower() not in keys],
    )


def _obsolete(section: Section) -> list[Problem]:
    return [
        Problem(e.file, e.line, "obsolete", f"[{section.name}] {e.key}: {OBSOLETE_QUEUE_KEYS[e.key.lower()]}")
        for e in section.entries
        if e.key.lower() in OBSOLETE_QUEUE_KEYS
    ]


def _queue_values(conf: ConfFile, section: Section) -> list[Problem]:
    problems = []
    for entry in section.entries:
        key = entry.key.lower()
        if key == "strategy" and entry.value not in QUEUE_STRATEGIES:
            problems.append(
                Problem(entry.file, entry.line, "queue", f"[{section.name}] unknown strategy {entry.value!r}")
            )
        if key == "member" and not re.match(r"^[A-Za-z]+/[^,]+", entry.value):
            problems.append(
                Problem(entry.file, entry.line, "queue", f"[{section.name}] member needs Tech/resource first")
            )
    if not section.is_template:
        for required in ("servicelevel", "wrapuptime", "strategy"):
            if conf.effective_get(section, required) is None:
                problems.append(
                    Problem(
                        section.file,
                        section.line,
                        "queue",
                        f"[{section.name}] sets no {required} (nor its template)",
                    )
                )
    return problems


# main/logger.c init_logger_chain() reads these and ignores any other key without a word.
LOGGER_GENERAL_KEYS = _words(
    "dateformat display_callids appendhostname queue_log queue_log_to_file queue_log_name "
    "queue_log_realtime_use_gmt rotatestrategy exec_after_rotate logger_queue_limit custom_levels"
)
# Level names a [logfiles] channel may list (make_components() skips unknown ones silently), and
# the ones a module registers when it loads.
LOGGER_LEVELS = _words("debug trace notice warning error verbose dtmf *")
LOGGER_MODULE_LEVELS = {"security": "res_security_log.so"}


def check_logger(conf: ConfFile, loaded: frozenset[str] | None = None) -> list[Problem]:
    problems = check_structure(conf, frozenset())
    general = conf.section("general")
    problems += [
        Problem(s.file, s.line, "unknown-section", f"[{s.name}]")
        for s in conf.sections
        if s.name not in ("general", "logfiles")
    ]
    if general is None:
        return [
            *problems,
            Problem(str(conf.path), 0, "queue-log", "no [general]: queue_log = yes must be explicit"),
        ]
    problems += _unknown_keys(general, LOGGER_GENERAL_KEYS, "logger.conf [general]")
    if not _truthy(general.get("queue_log")):
        problems.append(
            Problem(general.file, general.line, "queue-log", "queue_log = yes: cti reads it after reconnects")
        )
    if not _truthy(general.get("queue_log_to_file")):
        problems.append(
            Problem(
                general.file,
                general.line,
                "queue-log",
                "queue_log_to_file = yes: else a realtime queue_log (extconfig.conf) replaces the file "
                "cti reads",
            )
        )
    custom = {c.strip().lower() for c in (general.get("custom_levels") or "").split(",") if c.strip()}
    for section in conf.named("logfiles"):
        problems += _logger_levels(section, LOGGER_LEVELS | custom, loaded)
    return problems


def _logger_levels(
    section: Section, known: frozenset[str] | set[str], loaded: frozenset[str] | None
) -> list[Problem]:
    problems = []
    for entry in section.entries:
        levels = re.sub(r"^\s*\[[a-z]+\]", "", entry.value.lower())
        for level in (lv.strip() for lv in levels.split(",")):
            module = LOGGER_MODULE_LEVELS.get(level)
            if module and loaded is not None and module not in loaded:
                why = f"is registered by {module}, which modules.conf does not load"
            elif level in known or module or re.fullmatch(r"verbose\(\d+\)", level) or not level:
                continue
            else:
                why = "is no log level: Asterisk skips it without a word"
            problems.append(Problem(entry.file, entry.line, "logger", f"{entry.key}: level {level!r} {why}"))
    return problems


FEATURE_KEYS = {
    "general": _words(
        "featuredigittimeout transferdigittimeout atxfernoanswertimeout atxferdropcall atxferloopdelay "
        "atxfercallbackretries transferdialattempts transferretrysound transferinvalidsound atxferabort "
        "atxfercomplete atxferthreeway atxferswap pickupexten pickupsound pickupfailsound courtesytone "
        "recordingfailsound xfersound xferfailsound transferannouncesound"
    ),
    # main/features_config.c; automon went with res_monitor in Asterisk 21.
    "featuremap": _words("blindxfer disconnect atxfer parkcall automixmon"),
}


def check_features(conf: ConfFile) -> list[Problem]:
    problems = check_structure(conf, frozenset())
    for section in conf.sections:
        if section.name == "applicationmap":
            continue
        if section.name not in FEATURE_KEYS:
            problems.append(Problem(section.file, section.line, "unknown-section", f"[{section.name}]"))
            continue
        problems += _unknown_keys(section, FEATURE_KEYS[section.name], "features.conf")
    return problems


PJSIP_KEYS: dict[str, frozenset[str]] = {
    "global": _words(
        "type user_agent endpoint_identifier_order unidentified_request_count unidentified_request_period "
        "unidentified_request_prune_interval keep_alive_interval default_outbound_endpoint debug "
        "max_forwards contact_expiration_check_interval disable_multi_domain mwi_tps_queue_high "
        "ignore_uri_user_options norefersub allow_sending_180_after_183 "
        "send_contact_status_on_update_registration taskprocessor_overload_trigger"
    ),
    "transport": _words(
        "type protocol bind external_media_address external_signaling_address external_signaling_port "
        "local_net cert_file priv_key_file ca_list_file method verify_client verify_server "
        "require_client_cert cipher tos cos allow_reload symmetric_transport websocket_write_timeout"
    ),
    "endpoint": _words(
        "type context disallow allow direct_media rtp_symmetric force_rport rewrite_contact dtmf_mode "
        "device_state_busy_at allow_subscribe language send_pai send_rpid send_connected_line "
        "trust_id_inbound trust_id_outbound "
        "from_domain from_user outbound_auth auth aors callerid callerid_privacy set_var transport "
        "identify_by media_encryption media_encryption_optimistic ice_support webrtc use_avpf "
        "timers timers_min_se timers_sess_expires t38_udptl tone_zone moh_suggest mailboxes "
        "named_call_group named_pickup_group call_group pickup_group send_diversion 100rel "
        "rtp_timeout rtp_timeout_hold inband_progress allow_transfer accountcode"
    ),
    "auth": _words("type auth_type username password md5_cred realm nonce_lifetime password_digest"),
    "aor": _words(
        "type contact max_contacts remove_existing remove_unavailable qualify_frequency qualify_timeout "
        "authenticate_qualify default_expiration maximum_expiration minimum_expiration mailboxes"
    ),
    "identify": _words("type endpoint match match_header srv_lookups"),
    "registration": _words(
        "type outbound_auth server_uri client_uri retry_interval forbidden_retry_interval "
        "fatal_retry_interval expiration contact_user transport line endpoint max_retries "
        "auth_rejection_permanent"
    ),
}
PJSIP_REPEATABLE = frozenset(
    {"allow", "disallow", "set_var", "match", "local_net", "contact", "permit", "deny"}
)


def check_pjsip(conf: ConfFile, dialplan: Dialplan | None, queues: frozenset[str]) -> list[Problem]:
    problems = check_structure(conf, PJSIP_REPEATABLE, unique_sections=False)
    by_type: dict[str, set[str]] = {}
    for section in conf.sections:
        kind = conf.effective_get(section, "type")
        if section.is_template:
            continue
        if kind not in PJSIP_KEYS:
            problems.append(
                Problem(
                    section.file, section.line, "pjsip", f"[{section.name}] type {kind!r} unknown or missing"
                )
            )
            continue
        by_type.setdefault(kind, set()).add(section.name)
        problems += _unknown_keys(
            Section(section.name, section.file, section.line, entries=conf.effective(section)),
            PJSIP_KEYS[kind],
            f"pjsip {kind}",
        )
    for section in conf.sections:
        if not section.is_template and conf.effective_get(section, "type") in (
            "endpoint",
            "identify",
            "registration",
        ):
            problems += _pjsip_references(conf, section, by_type, dialplan, queues)
    return problems


def _pjsip_references(
    conf: ConfFile,
    section: Section,
    by_type: dict[str, set[str]],
    dialplan: Dialplan | None,
    queues: frozenset[str],
) -> list[Problem]:
    problems = []
    where = (section.file, section.line, "pjsip")
    for key, kind in (("auth", "auth"), ("outbound_auth", "auth"), ("aors", "aor"), ("endpoint", "endpoint")):
        for name in (conf.effective_get(section, key) or "").split(","):
            if name.strip() and name.strip() not in by_type.get(kind, set()):
                problems.append(
                    Problem(
                        *where, f"[{section.name}] {key} = {name.strip()}: no {kind} section of that name"
                    )
                )
    context = conf.effective_get(section, "context")
    if dialplan is not None and context and context not in dialplan.contexts:
        problems.append(Problem(*where, f"[{section.name}] context = {context}: no such dialplan context"))
    for value in (e.value for e in conf.effective(section) if e.key.lower() == "set_var"):
        name, _, listed = value.partition("=")
        if name.strip() == "CTI_AGENT_QUEUES":
            for queue in listed.split("&"):
                if queue.strip() not in queues:
                    problems.append(
                        Problem(*where, f"[{section.name}] CTI_AGENT_QUEUES names unknown queue {queue!r}")
                    )
    return problems


SIMPLE_FILES: dict[str, dict[str, frozenset[str]]] = {
    "rtp.conf": {
        "general": _words(
            "rtpstart rtpend strictrtp icesupport rtpchecksums dtmftimeout probation rtcpinterval "
            "srtpreplayprotection stunaddr stun_software_attribute turnaddr turnusername turnpassword "
            "dtls_mtu"
        )
    },
    "cdr.conf": {
        "general": _words("enable unanswered congestion endbeforehexten initiatedseconds batch"),
        "csv": _words("usegmtime accountlogs loguniqueid loguserfield newcdrcolumns"),
    },
    "amd.conf": {
        "general": _words(
            "initial_silence greeting after_greeting_silence total_analysis_time min_word_length "
            "between_words_silence maximum_number_of_words silence_threshold maximum_word_length"
        )
    },
}
# PostgreSQL: the realtime driver (res/res_config_pgsql.c parse_config(): each key also has an
# older db* spelling) and the CEL backend (cel/cel_pgsql.c process_my_load_module()).
SIMPLE_FILES["res_pgsql.conf"] = {
    "general": _words(
        "hostname dbhost port dbport dbname user dbuser password dbpass appname dbappname socket dbsock "
        "requirements order_multi_row_results_by_initial_column"
    )
}
SIMPLE_FILES["cel_pgsql.conf"] = {
    "global": _words("hostname port dbname user password appname table schema show_user_defined usegmtime")
}
# main/cel.c: [general] (aco options), and the sections of the CEL backends that read cel.conf
# (cel_manager's [manager], cel_radius's [radius]).
CEL_SECTIONS = {
    "general": _words("enable apps events dateformat"),
    "manager": _words("enabled show_user_defined"),
    "radius": _words("usegmtime radiuscfg loguniqueid loguserfield"),
}
# main/cel.c cel_event_types[]: a name not in it makes Asterisk refuse the whole cel.conf.
CEL_EVENTS = _words(
    "ALL CHAN_START CHAN_END ANSWER HANGUP APP_START APP_END PARK_START PARK_END USER_DEFINED "
    "BRIDGE_ENTER BRIDGE_EXIT BLINDTRANSFER ATTENDEDTRANSFER PICKUP FORWARD LINKEDID_END LOCAL_OPTIMIZE "
    "LOCAL_OPTIMIZE_BEGIN STREAM_BEGIN STREAM_END DTMF"
)
# What cti's recovery after a gap reads (src/cti/calls/gap.py): each call's channels from start to
# end, its answer, bridges, the end of its Linkedid, and the UserEvent()s of the dialplans.
CTI_CEL_EVENTS = _words("CHAN_START CHAN_END ANSWER HANGUP BRIDGE_ENTER BRIDGE_EXIT LINKEDID_END APP_START")
CTI_CEL_APPS = _words("userevent")
CEL_BACKENDS = (
    "cel_pgsql.so", "cel_odbc.so", "cel_custom.so", "cel_sqlite3_custom.so", "cel_manager.so",
    "cel_radius.so", "cel_tds.so", "cel_beanstalkd.so",
)  # fmt: skip
# extconfig.conf drivers (`family => driver,database[,table]`) and the module that registers each.
REALTIME_DRIVERS = {
    "pgsql": "res_config_pgsql.so",
    "odbc": "res_config_odbc.so",
    "mysql": "res_config_mysql.so",
    "sqlite3": "res_config_sqlite3.so",
    "ldap": "res_config_ldap.so",
    "curl": "res_config_curl.so",
}


def check_cel(conf: ConfFile, loaded: frozenset[str] | None) -> list[Problem]:
    problems = check_simple(conf, CEL_SECTIONS)
    general = conf.section("general")
    if general is None or not _truthy(general.get("enable")):
        return problems
    where = (general.file, general.line)
    events = {e.strip().upper() for e in (general.get("events") or "").split(",") if e.strip()}
    for event in sorted(events - CEL_EVENTS):
        problems.append(
            Problem(*where, "cel", f"events: {event!r} is no CEL event: Asterisk refuses cel.conf")
        )
    if "ALL" not in events:
        for event in sorted(CTI_CEL_EVENTS - events):
            problems.append(
                Problem(*where, "cel", f"events lacks {event}: cti's recovery after a gap reads it")
            )
    apps = {a.strip().lower() for a in (general.get("apps") or "").split(",") if a.strip()}
    if apps and not events & {"ALL", "APP_START", "APP_END"}:
        problems.append(Problem(*where, "cel", "apps without APP_START/APP_END: Asterisk refuses cel.conf"))
    if "all" not in apps:
        for app in sorted(CTI_CEL_APPS - apps):
            problems.append(
                Problem(*where, "cel", f"apps lacks {app}: the IVR steps of a call cti missed come from it")
            )
    if loaded is not None and not any(backend in loaded for backend in CEL_BACKENDS):
        problems.append(Problem(*where, "cel", "CEL is enabled but modules.conf loads no CEL backend"))
    return problems


def check_extconfig(conf: ConfFile, loaded: frozenset[str] | None) -> list[Problem]:
    problems = check_structure(conf, frozenset())
    for section in conf.sections:
        if section.name != "settings":
            problems.append(Problem(section.file, section.line, "unknown-section", f"[{section.name}]"))
            continue
        for entry in section.entries:
            driver = entry.value.split(",", 1)[0].strip().lower()
            module = REALTIME_DRIVERS.get(driver)
            if module is None:
                why = f"{driver!r} is no realtime driver ({', '.join(sorted(REALTIME_DRIVERS))})"
            elif loaded is not None and module not in loaded:
                why = f"the {driver} driver is {module}, which modules.conf does not load"
            else:
                continue
            problems.append(Problem(entry.file, entry.line, "extconfig", f"{entry.key}: {why}"))
    return problems


def _cel_backend_configured(parsed: dict[str, ConfFile], loaded: frozenset[str] | None) -> list[Problem]:
    """cel_pgsql.so loaded while cel.conf leaves CEL off: the backend would never write a row."""
    if loaded is None or "cel_pgsql.so" not in loaded:
        return []
    cel = parsed.get("cel.conf")
    general = cel.section("general") if cel is not None else None
    if general is not None and _truthy(general.get("enable")):
        return []
    where = (general.file, general.line) if general is not None else ("cel.conf", 1)
    return [Problem(*where, "cel", "cel_pgsql.so is loaded but cel.conf does not enable CEL")]


# res/res_musiconhold.c moh_parse_options() and load_moh_classes().
MOH_KEYS = _words(
    "mode directory sort application format digit announcement entry loop_last kill_escalation_delay "
    "kill_method answeredonly"
)
MOH_GENERAL_KEYS = _words("cachertclasses preferchannelclass")


def check_simple(conf: ConfFile, schema: dict[str, frozenset[str]]) -> list[Problem]:
    problems = check_structure(conf, frozenset())
    for section in conf.sections:
        if section.name not in schema:
            problems.append(Problem(section.file, section.line, "unknown-section", f"[{section.name}]"))
            continue
        problems += _unknown_keys(section, schema[section.name], conf.path.name)
    return problems


def _moh_classes(conf: ConfFile | None) -> frozenset[str] | None:
    if conf is None:
        return None
    return frozenset(s.name for s in conf.sections if s.name != "general" and not s.is_template)


def check_musiconhold(conf: ConfFile) -> list[Problem]:
    problems = check_structure(conf, frozenset())
    for section in conf.sections:
        if section.name == "general":
            problems += _unknown_keys(section, MOH_GENERAL_KEYS, "musiconhold.conf [general]")
        else:
            problems += _unknown_keys(section, MOH_KEYS, "musiconhold class")
    return problems


# ---------------------------------------------------------------------------- the whole tree


def _resolver(dialplan_dir: Path | None) -> Resolver:
    def resolve(including: Path, target: str) -> Path | None:
        found = _default_resolver(including, target)
        if found is None and dialplan_dir is not None and target.startswith("dialplans/"):
            candidate = dialplan_dir / target.split("/", 1)[1]
            found = candidate if candidate.exists() else None
        return found

    return resolve


def lint(conf_dir: Path, dialplan_dir: Path | None = None) -> list[Problem]:
    """Every problem in an asterisk-conf/ directory (its dialplans included from `dialplan_dir`)."""
    resolve = _resolver(dialplan_dir)
    parsed = {p.name: parse_conf(p, resolve) for p in sorted(conf_dir.glob("*.conf"))}
    problems = [p for conf in parsed.values() for p in conf.problems]
    for name in (
        "modules.conf",
        "manager.conf",
        "queues.conf",
        "logger.conf",
        "extensions.conf",
        "pjsip.conf",
    ):
        if name not in parsed:
            problems.append(Problem(str(conf_dir / name), 0, "missing", f"{name} is missing"))
    module_problems, loaded = (
        check_modules(parsed["modules.conf"]) if "modules.conf" in parsed else ([], None)
    )
    queue_problems, queues = (
        check_queues(parsed["queues.conf"], _moh_classes(parsed.get("musiconhold.conf")))
        if "queues.conf" in parsed
        else ([], frozenset())
    )
    problems += module_problems + queue_problems
    dialplan = parse_dialplan(parsed["extensions.conf"]) if "extensions.conf" in parsed else None
    if dialplan is not None:
        problems += dialplan.problems + check_dialplan(
            dialplan, loaded, queues, str(conf_dir / "extensions.conf")
        )
    problems += _other_files(parsed, dialplan, queues, loaded)
    problems += _cel_backend_configured(parsed, loaded)
    return sorted(set(problems))


def check_dialplan(
    dialplan: Dialplan, loaded: frozenset[str] | None, queues: frozenset[str], path: str
) -> list[Problem]:
    return (
        check_jumps(dialplan)
        + check_applications(dialplan, loaded)
        + check_user_events(dialplan)
        + check_queues_used(dialplan, queues)
        + check_originate_contexts(dialplan, path)
        + check_agi(dialplan)
    )


def _other_files(
    parsed: dict[str, ConfFile],
    dialplan: Dialplan | None,
    queues: frozenset[str],
    loaded: frozenset[str] | None = None,
) -> list[Problem]:
    problems: list[Problem] = []
    for name, conf in parsed.items():
        if name == "manager.conf":
            problems += check_manager(conf)
        elif name == "logger.conf":
            problems += check_logger(conf, loaded)
        elif name == "features.conf":
            problems += check_features(conf)
        elif name == "pjsip.conf":
            problems += check_pjsip(conf, dialplan, queues)
        elif name == "musiconhold.conf":
            problems += check_musiconhold(conf)
        elif name == "cel.conf":
            problems += check_cel(conf, loaded)
        elif name == "extconfig.conf":
            problems += check_extconfig(conf, loaded)
        elif name in SIMPLE_FILES:
            problems += check_simple(conf, SIMPLE_FILES[name])
        elif name == "extensions.conf":
            problems += check_structure(conf, frozenset({"exten", "same", "include", "switch", "ignorepat"}))
        elif name not in ("modules.conf", "queues.conf"):
            problems.append(Problem(str(conf.path), 0, "unknown-file", f"no lint rules for {name}: add them"))
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    conf_dir = Path(args[0]) if args else Path("asterisk-conf")
    dialplan_dir = Path(args[1]) if len(args) > 1 else conf_dir.parent / "dialplans"
    problems = lint(conf_dir, dialplan_dir)
    for problem in problems:
        print(problem)
    print(f"{len(problems)} problem(s) in {conf_dir} and {dialplan_dir}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
