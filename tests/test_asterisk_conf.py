"""The shipped Asterisk configuration and dialplans lint clean, the linter catches each kind of
mistake (one bad snippet per rule), and its contract tables agree with the tracker, the real
captures and the docs. Also: the lab's configs parse, and the compose file is sane."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from cti import asterisk_lint as lint_mod
from cti.asterisk_lint import (
    ORIGINATE_CONTEXTS,
    TRACKED_USER_EVENTS,
    TRACKER_EVENT_CLASSES,
    Problem,
    balance_problem,
    check_applications,
    check_jumps,
    lint,
    parse_conf,
    parse_dialplan,
    pattern_regex,
    split_top,
)

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "asterisk-conf"
DIALPLANS = ROOT / "dialplans"
DOCKER = ROOT / "docker"
SHARED = ROOT / "tests" / "captures" / "lab"
LAB = SHARED / "conf"


def test_shipped_configuration_lints_clean() -> None:
    problems = lint(CONF, DIALPLANS)
    assert problems == [], "\n".join(map(str, problems))


def test_command_line_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    assert lint_mod.main([str(CONF), str(DIALPLANS)]) == 0
    assert "0 problem(s)" in capsys.readouterr().err


# ------------------------------------------------------------------ one bad snippet per rule

Tree = tuple[Path, Path]


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    conf, dialplans = tmp_path / "asterisk-conf", tmp_path / "dialplans"
    shutil.copytree(CONF, conf)
    shutil.copytree(DIALPLANS, dialplans)
    return conf, dialplans


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path.name}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text(encoding="utf-8") + "\n" + text + "\n", encoding="utf-8")


def _expect(tree: Tree, rule: str, fragment: str) -> Problem:
    problems = lint(*tree)
    for problem in problems:
        if problem.rule == rule and fragment in problem.message:
            assert problem.line > 0 or rule in ("originate", "missing", "unknown-file")
            return problem
    raise AssertionError(
        f"no [{rule}] problem mentioning {fragment!r}; got:\n" + "\n".join(map(str, problems))
    )


Mutation = Callable[[Tree], None]
EXTRA = "cti-extra.conf"


def _dialplan(snippet: str) -> Mutation:
    """Add a context file holding `snippet` to the dialplans."""

    def apply(tree: Tree) -> None:
        conf, dialplans = tree
        (dialplans / EXTRA).write_text(snippet + "\n", encoding="utf-8")
        _append(conf / "extensions.conf", f"#include dialplans/{EXTRA}")

    return apply


def _conf_edit(name: str, old: str, new: str) -> Mutation:
    return lambda tree: _edit(tree[0] / name, old, new)


def _conf_append(name: str, text: str) -> Mutation:
    return lambda tree: _append(tree[0] / name, text)


NEGATIVE_CASES: dict[str, tuple[Mutation, str, str]] = {
    # INI dialect
    "garbage line": (_conf_append("queues.conf", "this is not config"), "syntax", "not a [section]"),
    "key before section": (
        lambda t: (t[0] / "rtp.conf").write_text("rtpstart = 1\n[general]\n", encoding="utf-8"),
        "syntax",
        "before any [section]",
    ),
    "duplicate key": (
        _conf_edit("manager.conf", "read = system", "read = call\nread = system"),
        "duplicate-key",
        "read",
    ),
    "duplicate section": (
        _conf_append("queues.conf", "[support](cti-queue)"),
        "duplicate-section",
        "[support]",
    ),
    "unknown template": (
        _conf_append("queues.conf", "[vip](no-such-template)"),
        "template",
        "no-such-template",
    ),
    "missing include": (
        _conf_append("extensions.conf", "#include dialplans/nope.conf"),
        "include",
        "nope.conf",
    ),
    "missing file": (lambda t: (t[0] / "logger.conf").unlink(), "missing", "logger.conf"),
    "unknown file": (lambda t: (t[0] / "foo.conf").write_text("[general]\n"), "unknown-file", "foo.conf"),
    "unknown section": (_conf_append("logger.conf", "[colours]\nx = 1"), "unknown-section", "[colours]"),
    # dialplan grammar
    "first priority n": (_dialplan("[cti-x]\nexten => 7,n,NoOp()"), "priority", "must start at priority 1"),
    "priority goes back": (
        _dialplan("[cti-x]\nexten => 7,1,NoOp()\nexten => 7,1,NoOp()"),
        "priority",
        "does not follow",
    ),
    "bad priority": (
        _dialplan("[cti-x]\nexten => 7,1,NoOp()\n same => next,NoOp()"),
        "priority",
        "bad priority",
    ),
    "label twice": (
        _dialplan("[cti-x]\nexten => 7,1(a),NoOp()\n same => n(a),NoOp()"),
        "priority",
        "label 'a' used twice",
    ),
    "same without exten": (_dialplan("[cti-x]\n same => n,NoOp()"), "syntax", "no `exten =>`"),
    "unclosed variable": (_dialplan("[cti-x]\nexten => 7,1,Set(A=${FOO)"), "balance", "'${' opened"),
    "unclosed expression": (_dialplan("[cti-x]\nexten => 7,1,Set(A=$[1 + 2)"), "balance", "'$[' opened"),
    "odd quotes": (_dialplan('[cti-x]\nexten => 7,1,Set(A="x)'), "balance", "double quotes"),
    # jumps
    "goto unknown context": (_dialplan("[cti-x]\nexten => 7,1,Goto(cti-nowhere,s,1)"), "goto", "cti-nowhere"),
    "goto unknown extension": (
        _dialplan("[cti-x]\nexten => 7,1,Goto(cti-ivr-main,42,1)"),
        "goto",
        "no extension '42'",
    ),
    "goto unknown label": (
        _dialplan("[cti-x]\nexten => 7,1,Goto(cti-ivr-main,s,nolabel)"),
        "goto",
        "no priority or label 'nolabel'",
    ),
    "gotoif bad branch": (
        _dialplan("[cti-x]\nexten => 7,1,GotoIf($[1 = 1]?yes:no)\n same => n(yes),NoOp()"),
        "goto",
        "'no'",
    ),
    "gotoiftime bad label": (
        _dialplan("[cti-x]\nexten => 7,1,GotoIfTime(08:00-18:00,mon-fri,*,*?open)"),
        "goto",
        "'open'",
    ),
    "gosub unknown context": (_dialplan("[cti-x]\nexten => 7,1,Gosub(cti-sub,s,1(a))"), "goto", "cti-sub"),
    "unknown include": (_dialplan("[cti-x]\ninclude => cti-nothing"), "goto", "cti-nothing"),
    # applications, functions, modules
    "unknown application": (
        _dialplan("[cti-x]\nexten => 7,1,Gotoo(cti-ivr-main,s,1)"),
        "application",
        "Gotoo",
    ),
    "unknown function": (_dialplan("[cti-x]\nexten => 7,1,NoOp(${SHELL(id)})"), "function", "SHELL"),
    "application removed from asterisk": (
        _dialplan("[cti-x]\nexten => 7,1,ImportVar(A=PJSIP/1001-00000001,B)"),
        "application",
        "ImportVar",
    ),
    "module not loaded": (_conf_edit("modules.conf", "load => app_amd.so", ""), "module", "app_amd.so"),
    # UserEvent contract
    "untracked user event": (
        _dialplan("[cti-x]\nexten => 7,1,UserEvent(Survey,Score: 5)"),
        "user-event",
        "Survey",
    ),
    "ivr without menu": (_dialplan("[cti-x]\nexten => 7,1,UserEvent(IVR,Step: enter)"), "user-event", "Menu"),
    "ivr two kinds": (
        _dialplan("[cti-x]\nexten => 7,1,UserEvent(IVR,Menu: main,Choice: 1,Step: enter)"),
        "user-event",
        "exactly one of",
    ),
    "ivr dynamic menu": (
        _dialplan("[cti-x]\nexten => 7,1,UserEvent(IVR,Menu: ${M},Step: enter)"),
        "user-event",
        "literal lower-case",
    ),
    "ivr invalid value": (
        _dialplan("[cti-x]\nexten => 7,1,UserEvent(IVR,Menu: main,Invalid: ${EXTEN})"),
        "user-event",
        "${INVALID_EXTEN}",
    ),
    "queueexit wrong status": (
        lambda t: _edit(
            t[1] / "cti-queues.conf", "sales,Status: ${QUEUESTATUS}", "sales,Status: ${DIALSTATUS}"
        ),
        "user-event",
        "Status: must be ${QUEUESTATUS}",
    ),
    "header without colon": (
        _dialplan("[cti-x]\nexten => 7,1,UserEvent(AgiDone,Customer: 1,Prio: 2,Lookup hit)"),
        "user-event",
        "not a 'Header: value' pair",
    ),
    "dialer amd missing cause": (
        lambda t: _edit(t[1] / "cti-outbound.conf", ",Cause: ${AMDCAUSE})", ")"),
        "user-event",
        "missing header Cause:",
    ),
    # queues used by the dialplan
    "unknown queue": (_dialplan("[cti-x]\nexten => 7,1,Queue(nosuch,t,,,60)"), "queue", "no queue 'nosuch'"),
    "unchecked queue variable": (
        _dialplan(
            "[cti-x]\nexten => 7,1,Queue(${Q},t)\n"
            " same => n,UserEvent(QueueExit,Queue: ${Q},Status: ${QUEUESTATUS})"
        ),
        "queue",
        "write the queue name",
    ),
    "queue without exit event": (
        lambda t: _edit(
            t[1] / "cti-queues.conf",
            " same => n,UserEvent(QueueExit,Queue: billing,Status: ${QUEUESTATUS})\n",
            "",
        ),
        "queue-exit",
        "Queue(billing) must be followed",
    ),
    "agent queue unknown": (
        _conf_edit("pjsip.conf", "CTI_AGENT_QUEUES=support&hotline", "CTI_AGENT_QUEUES=support&helpdesk"),
        "pjsip",
        "helpdesk",
    ),
    # the FastAGI lookup
    "agi old script": (
        _dialplan("[cti-x]\nexten => 7,1,AGI(cti-agi,lookup,FR)"),
        "agi",
        "cti-agi script is gone",
    ),
    "agi unknown route": (
        _dialplan("[cti-x]\nexten => 7,1,AGI(agi://${CTI_AGI_HOST}/lookups,FR)"),
        "agi",
        "no route 'lookups'",
    ),
    "agi name policy": (
        _dialplan("[cti-x]\nexten => 7,1,AGI(agi://${CTI_AGI_HOST}/lookup,FR,sometimes)"),
        "agi",
        "name policy 'sometimes'",
    ),
    # originate targets
    "originate context missing": (
        lambda t: _edit(t[1] / "cti-outbound.conf", "[cti-click-to-call]", "[cti-click-2-call]"),
        "originate",
        "cti-click-to-call",
    ),
    # manager.conf
    "read all": (
        _conf_edit("manager.conf", "read = system,call,agent,user", "read = all"),
        "manager-classes",
        "= all",
    ),
    "read too much": (
        _conf_edit("manager.conf", "read = system,call,agent,user", "read = system,call,agent,user,dialplan"),
        "manager-classes",
        "'dialplan', which cti never reads",
    ),
    "read too little": (
        _conf_edit("manager.conf", "read = system,call,agent,user", "read = system,call,user"),
        "manager-classes",
        "read lacks 'agent'",
    ),
    "write command": (
        _conf_edit(
            "manager.conf",
            "write = call,reporting,originate,agent",
            "write = call,reporting,originate,agent,command",
        ),
        "manager-classes",
        "'command'",
    ),
    "write missing originate": (
        _conf_edit("manager.conf", "write = call,reporting,originate,agent", "write = call,reporting,agent"),
        "manager-classes",
        "Originate",
    ),
    "no timestamps": (
        _conf_edit("manager.conf", "timestampevents = yes", "timestampevents = no"),
        "manager",
        "timestampevents",
    ),
    "manager option asterisk refuses": (
        _conf_edit("manager.conf", "authlimit = 20", "authlimit = 20\ntlscafile = /etc/ssl/ca.pem"),
        "unknown-key",
        "tlscafile",
    ),
    "open acl": (
        _conf_edit("manager.conf", "permit = 127.0.0.1/255.255.255.255", "permit = 0.0.0.0/0.0.0.0"),
        "manager-acl",
        "lets anyone",
    ),
    "secret in file": (
        _conf_edit("manager.conf", "deny = 0.0.0.0/0.0.0.0", "secret = ctisecret\ndeny = 0.0.0.0/0.0.0.0"),
        "manager",
        "keep the secret out",
    ),
    # queues.conf
    "obsolete keyword": (
        _conf_append("queues.conf", "[lab](cti-queue)\neventwhencalled = yes"),
        "obsolete",
        "eventwhencalled",
    ),
    "unknown queue keyword": (
        _conf_append("queues.conf", "[lab](cti-queue)\nringtime = 5"),
        "unknown-key",
        "ringtime",
    ),
    "bad strategy": (
        _conf_append("queues.conf", "[lab](cti-queue)\nstrategy = roundrobin"),
        "queue",
        "roundrobin",
    ),
    "queue without service level": (
        _conf_edit("queues.conf", "servicelevel = 20\n", ""),
        "queue",
        "servicelevel",
    ),
    "bad member": (
        _conf_append("queues.conf", "[lab](cti-queue)\nmember => 1001,0,Agent"),
        "queue",
        "Tech/resource",
    ),
    "unknown general queue keyword": (
        _conf_edit("queues.conf", "persistentmembers = yes", "persistentmembers = yes\nkeepstats = yes"),
        "unknown-key",
        "keepstats",
    ),
    # app_queue keeps the first strategy= of a queue: the template's, not the queue's own
    "strategy after the template's": (
        _conf_append("queues.conf", "[lab](cti-rrmemory)\nstrategy = ringall"),
        "queue-override",
        "first strategy= of a queue (reload_single_queue reads it with ast_variable_retrieve), here "
        "rrmemory from template cti-rrmemory",
    ),
    "joinempty added to the template's": (
        _conf_append("queues.conf", "[lab](cti-rrmemory)\njoinempty = paused"),
        "queue-override",
        "joinempty = paused on line",
    ),
    "unknown empty condition": (
        _conf_append("queues.conf", "[lab](cti-rrmemory)\nleavewhenempty = strict,unavailible"),
        "queue-value",
        "unknown conditions ['unavailible']",
    ),
    "queue boolean not a boolean": (
        _conf_append("queues.conf", "[lab](cti-rrmemory)\nringinuse = never"),
        "queue-value",
        "neither yes nor no",
    ),
    "queue number with a unit": (
        _conf_append("queues.conf", "[lab](cti-rrmemory)\nwrapuptime = 30s"),
        "queue-value",
        "not a whole number",
    ),
    "queue unknown choice": (
        _conf_append("queues.conf", "[lab](cti-rrmemory)\nautopause = always"),
        "queue-value",
        "autopause = always is not one of",
    ),
    "position limit missing": (
        _conf_edit("queues.conf", "announce-position-limit = 5\n", ""),
        "queue-value",
        "without announce-position-limit",
    ),
    "unknown music class": (
        _conf_edit("queues.conf", "musicclass = default", "musicclass = jazz"),
        "queue-value",
        "no class of musiconhold.conf",
    ),
    # logger.conf
    "queue_log off": (
        _conf_edit("logger.conf", "queue_log = yes", "queue_log = no"),
        "queue-log",
        "queue_log = yes",
    ),
    "queue_log not kept in a file": (
        _conf_edit("logger.conf", "queue_log_to_file = yes", "queue_log_to_file = no"),
        "queue-log",
        "realtime queue_log",
    ),
    "unknown logger option": (
        _conf_edit("logger.conf", "rotatestrategy = rotate", "rotatestrategy = rotate\nuse_callids = no"),
        "unknown-key",
        "use_callids",
    ),
    "unknown log level": (
        _conf_edit("logger.conf", "notice,warning,error\n", "notice,warnings,error\n"),
        "logger",
        "level 'warnings' is no log level",
    ),
    "log level of a module not loaded": (
        _conf_edit("modules.conf", "load => res_security_log.so", ""),
        "logger",
        "res_security_log.so",
    ),
    # cel.conf, extconfig.conf, res_pgsql.conf, cel_pgsql.conf: queue_log and CEL to PostgreSQL
    "unknown CEL event": (
        _conf_edit("cel.conf", "LINKEDID_END,", "LINKEDID_ENDED,"),
        "cel",
        "'LINKEDID_ENDED' is no CEL event",
    ),
    "CEL event cti reads left out": (
        _conf_edit("cel.conf", "LINKEDID_END,", ""),
        "cel",
        "lacks LINKEDID_END",
    ),
    "CEL apps without APP events": (
        _conf_edit("cel.conf", "APP_START,APP_END,", ""),
        "cel",
        "apps without APP_START/APP_END",
    ),
    "CEL apps without userevent": (
        _conf_edit("cel.conf", "apps = userevent,queue", "apps = queue"),
        "cel",
        "userevent",
    ),
    "CEL with no backend": (
        _conf_edit("modules.conf", "load => cel_pgsql.so", "noload => cel_pgsql.so"),
        "cel",
        "no CEL backend",
    ),
    "CEL backend with CEL off": (
        _conf_edit("cel.conf", "enable = yes", "enable = no"),
        "cel",
        "does not enable",
    ),
    "realtime driver not loaded": (
        _conf_edit("modules.conf", "load => res_config_pgsql.so", "noload => res_config_pgsql.so"),
        "extconfig",
        "res_config_pgsql.so, which modules.conf does not load",
    ),
    "unknown realtime driver": (
        _conf_edit("extconfig.conf", "pgsql,asterisk", "postgres,asterisk"),
        "extconfig",
        "'postgres' is no realtime driver",
    ),
    "unknown res_pgsql option": (
        _conf_edit("res_pgsql.conf", "requirements = warn", "requirements = warn\ntimeout = 2"),
        "unknown-key",
        "timeout",
    ),
    # features.conf, musiconhold.conf
    "removed feature key": (_conf_append("features.conf", "automon => *1"), "unknown-key", "automon"),
    "unknown moh general option": (
        _conf_edit("musiconhold.conf", "[general]\n", "[general]\nrandom = yes\n"),
        "unknown-key",
        "random",
    ),
    # modules.conf
    "autoload": (_conf_edit("modules.conf", "autoload = no", "autoload = yes"), "modules", "autoload = no"),
    "removed module": (_conf_append("modules.conf", "load => chan_local.so"), "modules", "part of the core"),
    "required module missing": (
        _conf_edit("modules.conf", "load => res_agi.so", ""),
        "modules",
        "res_agi.so",
    ),
    # what a real Asterisk 22.10.1 refused: res_agi is declined without res_speech
    "module dependency missing": (
        _conf_edit("modules.conf", "load => res_speech.so", ""),
        "module-deps",
        "res_speech.so is not loaded, and res_agi.so needs res_speech.so",
    ),
    "module dependency missing two levels down": (
        _conf_append("modules.conf", "load => res_speech_aeap.so"),
        "module-deps",
        "res_speech_aeap.so needs res_aeap.so needs res_http_websocket.so",
    ),
    "module that does not exist": (
        _conf_append("modules.conf", "load => app_queues.so"),
        "module-unknown",
        "app_queues.so: no such module in Asterisk 22.10.1",
    ),
    "module built into asterisk": (
        _conf_append("modules.conf", "load => cdr.so"),
        "module-unknown",
        "part of the asterisk binary",
    ),
    "module merged into res_pjsip": (
        _conf_append("modules.conf", "load => res_pjsip_transport_management.so"),
        "modules",
        "built into res_pjsip",
    ),
    # pjsip.conf
    "endpoint context missing": (
        _conf_edit("pjsip.conf", "context = cti-agents", "context = from-internal"),
        "pjsip",
        "from-internal",
    ),
    "auth reference missing": (
        _conf_edit("pjsip.conf", "auth = 1001", "auth = 1001-auth"),
        "pjsip",
        "1001-auth",
    ),
    "unknown pjsip type": (_conf_append("pjsip.conf", "[x]\ntype = trunk"), "pjsip", "type 'trunk'"),
    "unknown pjsip option": (
        _conf_append("pjsip.conf", "[x]\ntype = aor\nmax_contact = 1"),
        "unknown-key",
        "max_contact",
    ),
}


@pytest.mark.parametrize("case", sorted(NEGATIVE_CASES))
def test_bad_snippet_is_rejected(case: str, tree: Tree) -> None:
    mutate, rule, fragment = NEGATIVE_CASES[case]
    mutate(tree)
    problem = _expect(tree, rule, fragment)
    assert str(problem).startswith(problem.file)  # "file:line: [rule] message", for editors


def _rules_in_source() -> set[str]:
    """Every rule name the linter can report: Problem(file, line, RULE, ...), self.problem(entry,
    RULE, ...) and the `where = (file, line, RULE)` shorthands."""
    tree = ast.parse((ROOT / "src" / "cti" / "asterisk_lint.py").read_text(encoding="utf-8"))
    rules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
            index = {"Problem": 2, "problem": 1}.get(name)
            if name == "Problem" and node.args and isinstance(node.args[0], ast.Starred):
                # Problem(*where, RULE, message) with where = (file, line); a 3-item `where`
                # carries the rule itself and is found below.
                index = 1 if len(node.args) >= 3 else None
            if index is not None and len(node.args) > index and isinstance(node.args[index], ast.Constant):
                rules.add(str(node.args[index].value))
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Tuple) and len(node.value.elts) == 3:
            last = node.value.elts[2]
            if isinstance(last, ast.Constant) and isinstance(last.value, str):
                rules.add(last.value)
    return rules


def test_every_rule_has_a_negative_case() -> None:
    rules = _rules_in_source()
    assert len(rules) > 20
    covered = {rule for _, rule, _ in NEGATIVE_CASES.values()}
    assert rules - covered == set()


# ------------------------------------------------------------------ contract tables vs reality


def test_tracked_user_events_are_the_ones_the_dialplans_emit() -> None:
    conf = parse_conf(CONF / "extensions.conf", lint_mod._resolver(DIALPLANS))
    emitted = {
        split_top(step.args, ",")[0] for _, _, step in parse_dialplan(conf).steps() if step.app == "UserEvent"
    }
    assert emitted == TRACKED_USER_EVENTS


def test_tracker_events_have_a_read_class() -> None:
    from cti.calls.tracker import RESYNC_EVENTS, CallTracker

    assert CallTracker().handled_events - RESYNC_EVENTS <= set(TRACKER_EVENT_CLASSES)


def test_event_classes_match_the_real_captures() -> None:
    seen: dict[str, set[str]] = {}
    for capture in SHARED.glob("*.ami"):
        event = None
        for line in capture.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("Event: "):
                event = line[7:].strip()
            elif line.startswith("Privilege: ") and event:
                seen.setdefault(event, set()).add(line[11:].split(",")[0].strip().lower())
    checked = {name: classes for name, classes in seen.items() if name in TRACKER_EVENT_CLASSES}
    assert len(checked) >= 20
    for name, classes in checked.items():
        assert classes == {TRACKER_EVENT_CLASSES[name]}, name


def test_application_tables_match_asterisk_22() -> None:
    """APP_MODULES / FUNCTION_MODULES agree with what each Asterisk 22.10.1 module documents."""
    table = lint_mod.module_table()
    assert table.version == "22.10.1"
    for name, module in lint_mod.APP_MODULES.items():
        assert table.applications.get(name, "missing") == module, name
    for name, module in lint_mod.FUNCTION_MODULES.items():
        assert table.functions.get(name, "missing") == module, name
    for module in lint_mod.REQUIRED_MODULES:
        assert table.exists(module), module


def test_module_table_facts() -> None:
    table = lint_mod.module_table()
    assert table.requires["res_agi"] == ("res_speech",)
    assert set(table.requires["chan_pjsip"]) == {"res_pjsip", "res_pjsip_session", "res_pjsip_pubsub"}
    # res_pjsip requires dnsmgr, which is compiled into asterisk: never a .so to load
    assert "dnsmgr" in table.requires["res_pjsip"] and "dnsmgr" in table.builtin
    assert table.requires["res_fax_spandsp"] == ("res_fax",)  # .enhances is as hard as .requires
    for gone in ("chan_sip", "app_macro", "res_monitor", "chan_local", "res_pjsip_transport_management"):
        assert not table.exists(gone), gone


def test_module_table_is_what_the_asterisk_sources_give(tmp_path: Path) -> None:
    """scripts/asterisk-module-deps, run on the 22.10.1 sources, gives the committed table."""
    source = Path("/tmp/astsrc/asterisk-22.10.1")
    tarball = ROOT.parent / "shared" / "asterisk" / "asterisk-22.10.1.tar.gz"
    if not (source / "main" / "loader.c").exists():
        if not tarball.exists() or not hasattr(tarfile, "data_filter"):
            pytest.skip("no Asterisk 22.10.1 sources here (or no safe tarfile extraction)")
        with tarfile.open(tarball) as archive:
            archive.extractall(tmp_path, filter="data")
        source = tmp_path / "asterisk-22.10.1"
    script = ROOT / "scripts" / "asterisk-module-deps"
    result = subprocess.run(
        [sys.executable, str(script), str(source), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_docs_state_the_contract() -> None:
    doc = (ROOT / "docs" / "asterisk.md").read_text(encoding="utf-8")
    assert "## Event contract with cti" in doc
    for name in TRACKED_USER_EVENTS | ORIGINATE_CONTEXTS:
        assert f"`{name}`" in doc, name


def test_dialplan_calls_the_daemons_fastagi_lookup() -> None:
    from cti.config import AgiSettings

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert "cti-agi" not in scripts  # the process-per-call script is gone
    inbound = (DIALPLANS / "cti-inbound.conf").read_text(encoding="utf-8")
    skipped = inbound.index("Set(CTI_LOOKUP=skipped)")  # what a call shows when cti is down
    assert inbound.index("AGI(agi://${CTI_AGI_HOST}/lookup,${CTI_REGION})") > skipped
    globals_ = (CONF / "extensions.conf").read_text(encoding="utf-8")
    assert f"CTI_AGI_HOST=127.0.0.1:{AgiSettings().port}" in globals_.splitlines()


# ------------------------------------------------------------------ the parser on the lab's files


@pytest.mark.parametrize("name", ["extensions.conf", "queues.conf", "manager.conf", "features.conf"])
def test_lab_configs_parse(name: str) -> None:
    conf = parse_conf(LAB / name)
    assert conf.problems == []
    assert conf.sections


def test_lab_dialplan_structure_and_jumps() -> None:
    dialplan = parse_dialplan(parse_conf(LAB / "extensions.conf"))
    assert dialplan.problems == []
    assert check_jumps(dialplan) == []  # e.g. Goto(to-queue,support,1) lands on the _[a-z]. pattern
    assert check_applications(dialplan, None) == []
    emitted = {split_top(s.args, ",")[0] for _, _, s in dialplan.steps() if s.app == "UserEvent"}
    assert emitted <= TRACKED_USER_EVENTS


def test_lab_manager_conf_is_what_we_refuse() -> None:
    # The lab's AMI user was deliberately broad; the production rules must say so.
    messages = " ".join(p.message for p in lint_mod.check_manager(parse_conf(LAB / "manager.conf")))
    assert "= all" in messages and "which cti never reads" in messages


# ------------------------------------------------------------------ building blocks


@pytest.mark.parametrize(
    ("pattern", "exten", "matches"),
    [
        ("_X.", "0612", True),
        ("_X.", "s", False),
        ("_[a-z].", "support", True),
        ("_0ZXXXXXXXX", "0612345678", True),
        ("_0ZXXXXXXXX", "0012345678", False),
        ("_+X.", "+33612345678", True),
        ("_*43X", "*432", True),
        ("_100[1-6]", "1007", False),
        ("_NXX", "212", True),
        ("_X!", "", False),
        ("s", "S", True),
    ],
)
def test_pattern_matching(pattern: str, exten: str, matches: bool) -> None:
    assert bool(pattern_regex(pattern).match(exten)) is matches


def test_split_and_balance() -> None:
    assert split_top('a,${IF($["${X}" = ""]?b:c)},"d,e"', ",") == ["a", '${IF($["${X}" = ""]?b:c)}', '"d,e"']
    assert balance_problem('$[${REGEX("^[+][1-9][0-9]{5,14}$" ${n})}]') is None
    assert balance_problem("Set(A=${B)") is not None


def test_block_comments_and_escaped_semicolons(tmp_path: Path) -> None:
    path = tmp_path / "x.conf"
    path.write_text("[a]\n;-- hidden\n[b]\n--;\nk = v\\;w ; comment\n", encoding="utf-8")
    conf = parse_conf(path)
    assert [s.name for s in conf.sections] == ["a"]
    assert conf.sections[0].get("k") == "v\\;w"


def test_asterisklint_agrees_when_installed(tmp_path: Path) -> None:
    """Cross-check with asterisklint (PyPI) if present: it must find no error of its own kind."""
    # A test dependency: beside this interpreter when the venv's bin is not on PATH.
    exe = shutil.which("asterisklint") or shutil.which("asterisklint", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("asterisklint is not installed (pip install asterisklint)")
    staging = tmp_path / "conf"
    shutil.copytree(CONF, staging)
    shutil.copytree(DIALPLANS, staging / "dialplans")
    out = subprocess.run(
        [exe, "dialplan-check", "extensions.conf"], cwd=staging, capture_output=True, text=True
    )
    errors = [
        line
        for line in (out.stdout + out.stderr).splitlines()
        # asterisklint 0.4 knows Asterisk 11/13 applications only: AMD and a few newer ones are ours to check.
        if " E_" in line and "E_APP_MISSING" not in line
    ]
    assert errors == []


# ------------------------------------------------------------------ docker/


def test_compose_file_is_valid_when_a_client_is_available() -> None:
    compose = DOCKER / "docker-compose.yml"
    candidates = [["docker", "compose"], ["docker-compose"]]
    for command in candidates:
        if shutil.which(command[0]) is None:
            continue
        probe = subprocess.run([*command, "version"], capture_output=True, text=True)
        if probe.returncode != 0:
            continue
        result = subprocess.run(
            [*command, "-f", str(compose), "config", "--quiet"], capture_output=True, text=True, cwd=DOCKER
        )
        assert result.returncode == 0, result.stderr
        return
    pytest.skip("no docker compose client here (the checks below still run)")


def _lab_overlay(tmp_path: Path, **ports: str) -> Path:
    """The shipped configuration as the lab's Asterisk container gets it (docker/asterisk/overlay.sh)."""
    etc = tmp_path / "etc"
    shutil.copytree(CONF, etc)
    shutil.copytree(DIALPLANS, etc / "dialplans")
    env = {"PATH": "/usr/bin:/bin", **{f"CTI_LAB_{k.upper()}": v for k, v in ports.items()}}
    result = subprocess.run(
        ["sh", str(DOCKER / "asterisk" / "overlay.sh"), str(etc)], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return etc


def test_lab_overlay_puts_every_asterisk_socket_on_loopback(tmp_path: Path) -> None:
    etc = _lab_overlay(
        tmp_path,
        ami_port="6038",
        sip_port="6060",
        pstn_port="6070",
        caller_ports="6071 6072",
        agi_port="6573",
        pg_port="6433",
    )
    manager = parse_conf(etc / "manager.conf").section("general")
    assert manager is not None
    assert (manager.get("bindaddr"), manager.get("port")) == ("127.0.0.1", "6038")
    pjsip = parse_conf(etc / "pjsip.conf")
    transports = [s for s in pjsip.sections if s.get("type") == "transport"]
    assert [t.get("bind") for t in transports] == ["127.0.0.1:6060"]
    # RTP binds to the endpoint's transport's address, else to every interface.
    endpoints = [
        s for s in pjsip.sections if pjsip.effective_get(s, "type") == "endpoint" and not s.is_template
    ]
    assert endpoints and {pjsip.effective_get(e, "transport") for e in endpoints} == {"transport-udp"}
    trunk = next(s for s in pjsip.named("trunk") if s.get("type") == "aor")
    assert trunk.get("contact") == "sip:127.0.0.1:6070"
    identify = next(s for s in pjsip.named("trunk") if s.get("type") == "identify")
    assert identify.values("match") == ["127.0.0.1:6071", "127.0.0.1:6072"]
    globals_ = parse_conf(etc / "extensions.conf").section("globals")
    assert globals_ is not None and globals_.get("CTI_AGI_HOST") == "127.0.0.1:6573"
    # Deploy step 6: the queue_log and CEL to the lab's PostgreSQL, its database `asterisk`.
    for name, section in (("res_pgsql.conf", "general"), ("cel_pgsql.conf", "global")):
        found = parse_conf(etc / name).section(section)
        assert found is not None
        assert (found.get("hostname"), found.get("port"), found.get("dbname"), found.get("user")) == (
            "127.0.0.1", "6433", "asterisk", "asterisk"
        )  # fmt: skip
    # Still a configuration the lint passes.
    assert lint(etc, etc / "dialplans") == []


def test_lab_overlay_makes_the_tiers_edits_and_says_so_in_the_docs(tmp_path: Path) -> None:
    """The lab and the real-PBX tier change the same shipped lines (the lab adds RTP on loopback,
    and its PostgreSQL's port, as the tier's PostgreSQL-backed variant does for another server),
    and docs/asterisk.md's compose lab section lists each of them."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("tier_lab", ROOT / "tests" / "pbx" / "lab.py")
    assert spec is not None and spec.loader is not None
    tier = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = tier  # its dataclasses look their module up
    spec.loader.exec_module(tier)
    edits = tier.overlay(tier.Ports(1, 2, 3, (4,), 5))
    script = (DOCKER / "asterisk" / "overlay.sh").read_text(encoding="utf-8")
    lab_edits = re.findall(r'^ *edit (\S+) "([^"]+)"', script, re.MULTILINE)
    assert {(e.file, e.old) for e in edits} <= set(lab_edits)
    extra = set(lab_edits) - {(e.file, e.old) for e in edits}
    records = {("res_pgsql.conf", "port = 5432"), ("cel_pgsql.conf", "port = 5432")}
    rtp = {("pjsip.conf", "context = cti-agents"), ("pjsip.conf", "context = cti-inbound")}
    assert extra == rtp | records
    # The records' edits are the tier's for a server on another port, with the shipped database
    # and role kept (the lab's PostgreSQL has them: docker/postgres/entrypoint.sh).
    tier_records = tier.pgsql_overlay(tier.PgTarget("asterisk", "asterisk", "127.0.0.1", 5433))
    assert records <= {(e.file, e.old) for e in tier_records}
    docs = (ROOT / "docs" / "asterisk.md").read_text(encoding="utf-8")
    section = docs[docs.index("## The compose lab") :].split("\n## ", 1)[0]
    for _, old in lab_edits:
        assert f"`{old}`" in section, old


def test_lab_overlay_refuses_a_shipped_file_it_does_not_recognise(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    shutil.copytree(CONF, etc)
    manager = etc / "manager.conf"
    manager.write_text(manager.read_text().replace("bindaddr = 0.0.0.0", "bindaddr = ::"))
    result = subprocess.run(
        ["sh", str(DOCKER / "asterisk" / "overlay.sh"), str(etc)], capture_output=True, text=True
    )
    assert result.returncode != 0 and "bindaddr = 0.0.0.0" in result.stderr


def test_compose_lab_runs_on_the_host_network_and_publishes_nothing() -> None:
    compose = (DOCKER / "docker-compose.yml").read_text(encoding="utf-8")
    services = re.findall(
        r"^  (\w+):\n", compose.split("\nservices:\n", 1)[1].split("\nvolumes:\n", 1)[0], re.M
    )
    assert services == ["postgres", "asterisk", "cti"]
    assert compose.count("network_mode: host") == len(services)
    assert "ports:" not in compose and "networks:" not in compose
    assert "healthcheck" in compose and "/readyz" in compose and "pg_isready" in compose
    # PostgreSQL beside one already on 5432; the daemon's URL and the server agree.
    assert (
        "PGPORT: ${CTI_LAB_PG_PORT:-5433}" in compose and "127.0.0.1:${CTI_LAB_PG_PORT:-5433}/cti" in compose
    )


def test_compose_lab_gives_asterisk_its_records_database() -> None:
    """Deploy step 6 in the lab: PostgreSQL creates the roles, the database `asterisk` and the
    shipped tables with their grants; Asterisk starts once it is healthy (cel_pgsql and the logger
    read the tables' columns at start), with PGCONNECT_TIMEOUT, and cti reads them."""
    compose = (DOCKER / "docker-compose.yml").read_text(encoding="utf-8")
    body = compose.split("\nservices:\n", 1)[1].split("\nvolumes:\n", 1)[0]
    services = dict(re.findall(r"^  (\w+):\n((?:    .*\n|\n)*)", body + "\n", re.MULTILINE))
    assert "../asterisk-conf/postgresql-tables.sql:/opt/cti/postgresql-tables.sql:ro" in services["postgres"]
    asterisk = services["asterisk"]
    assert re.search(r"depends_on:\n\s+postgres:\n\s+condition: service_healthy", asterisk)
    assert 'PGCONNECT_TIMEOUT: "2"' in asterisk and "CTI_LAB_PG_PORT: ${CTI_LAB_PG_PORT:-5433}" in asterisk
    # Each secret's default is written once, in x-lab; the services name it.
    for secret in ("asterisk-db-password", "reader-db-password", "records-url"):
        assert compose.count(f"&{secret} ") == 1 and f"*{secret}" in body, secret
    assert compose.count("lab-asterisk-db-change-me") == 1
    assert "CTI_LAB_ASTERISK_DB_PASSWORD: *asterisk-db-password" in asterisk
    assert "CTI_AMI_RECORDS_URL: *records-url" in services["cti"]
    # The lab's PostgreSQL grants what postgresql-tables.sql says, and nothing more.
    tables = (CONF / "postgresql-tables.sql").read_text(encoding="utf-8")
    said = re.findall(r"^--\s+(GRANT .*;)$", tables, re.MULTILINE)
    entrypoint = (DOCKER / "postgres" / "entrypoint.sh").read_text(encoding="utf-8")
    assert said and re.findall(r'echo "(GRANT .*;)"', entrypoint) == said


PRIVATE = re.compile(r"\b(10\.\d{1,3}|172\.(1[6-9]|2\d|3[01])|192\.168)\.\d{1,3}\.\d{1,3}\b")


def test_no_private_range_address_in_the_lab_nor_the_tier() -> None:
    """Tests and the lab talk to 127.0.0.1 only: no 10.x, 172.16-31.x or 192.168.x anywhere."""
    files = [p for p in [*DOCKER.rglob("*"), *(ROOT / "tests" / "pbx").rglob("*.py")] if p.is_file()]
    found = [f"{p}: {m.group(0)}" for p in files for m in PRIVATE.finditer(p.read_text(errors="replace"))]
    assert found == []


def test_cti_image_runs_as_non_root() -> None:
    dockerfile = (DOCKER / "cti.Dockerfile").read_text(encoding="utf-8")
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.MULTILINE)
    assert users and users[-1] not in ("root", "0")
    assert "HEALTHCHECK" in dockerfile


def test_compose_settings_file_loads() -> None:
    from cti.config import load_settings

    settings = load_settings(DOCKER / "cti.toml", env={})
    # Host networking: the daemon reaches AMI and PostgreSQL on loopback and listens there only.
    assert settings.asterisk[0].host == "127.0.0.1"
    assert settings.asterisk[0].queue_log == "/var/log/asterisk/queue_log"
    assert (settings.web.host, settings.agi.host) == ("127.0.0.1", "127.0.0.1")
    assert "@127.0.0.1:5433/" in settings.database.url
    # Asterisk's records (deploy step 6), as cti's reader; its password from CTI_AMI_RECORDS_URL.
    assert settings.asterisk[0].records_url == "postgresql://cti_reader@127.0.0.1:5433/asterisk"
