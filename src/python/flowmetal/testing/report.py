"""What `flowmetal test` shows: a character per test, then each failure, then a summary
(as pytest does); and the same outcomes as JUnit XML for CI systems."""

import xml.etree.ElementTree as ET


def progress_char(outcome):
    return "." if outcome.ok else ("E" if outcome.error else "F")


def failure_text(outcome):
    lines = [f"_____ {outcome.id} _____", f"{outcome.where or outcome.file}: {outcome.message}"]
    if outcome.detail:
        lines += ["    " + ln for ln in outcome.detail.splitlines()]
    if outcome.journal:
        lines.append("journal up to the failure:")
        lines += ["    " + ln for ln in outcome.journal.splitlines()]
    return "\n".join(lines)


def summary(session):
    passed = sum(1 for o in session.outcomes if o.ok)
    failed = sum(1 for o in session.outcomes if not o.ok and not o.error)
    errors = len(session.load_errors)
    parts = [f"{failed} failed"] if failed else []
    parts.append(f"{passed} passed")
    if errors:
        parts.append(f"{errors} error{'s' if errors > 1 else ''}")
    return ", ".join(parts) + f" in {session.seconds:.2f}s"


def junit_xml(session):
    failures = sum(1 for o in session.outcomes if not o.ok and not o.error)
    suite = ET.Element("testsuite", name="flowmetal", tests=str(len(session.outcomes)), failures=str(failures),
                       errors=str(len(session.load_errors)), time=f"{session.seconds:.3f}")
    for o in session.outcomes:
        case = ET.SubElement(suite, "testcase", classname=o.file, name=o.name, time=f"{o.seconds:.3f}")
        if not o.ok:
            el = ET.SubElement(case, "error" if o.error else "failure", message=f"{o.where}: {o.message}")
            el.text = failure_text(o)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True)
