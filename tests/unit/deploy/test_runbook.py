"""docs/runbook.md against deploy/prometheus/alerts.yml: one section per alert, each alert's
`runbook_url` pointing at its own section, and no section for an alert that does not exist."""

from __future__ import annotations

import re

from tests.support.deploy import PROM, ROOT, alert_rules

RUNBOOK = ROOT / "docs" / "runbook.md"
PROCEDURES = (
    "Broker outage",
    "Redis loss",
    "Warehouse outage",
    "Poison events",
    "A compromised key",
    "An erasure request",
    "A replay from an offset",
    "Scaling workers by partitions",
)


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation out, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def sections(text: str, level: str, under: str) -> list[str]:
    """Headings of `level` ("###") inside the `## under` section."""
    out: list[str] = []
    inside = False
    for line in text.splitlines():
        if line.startswith("## "):
            inside = line[3:].strip() == under
        elif inside and line.startswith(level + " "):
            out.append(line[len(level) + 1 :].strip())
    return out


def runbook_links(rules: list[dict[str, object]]) -> dict[str, str]:
    links: dict[str, str] = {}
    for rule in rules:
        annotations = rule.get("annotations")
        assert isinstance(annotations, dict)
        links[str(rule["alert"])] = str(annotations.get("runbook_url", ""))
    return links


def mismatches(alerts: dict[str, str], headings: list[str]) -> list[str]:
    """What keeps the alerts and the runbook out of step (empty when they agree)."""
    problems = [f"no runbook section for {a}" for a in alerts if a not in headings]
    problems += [f"runbook section for unknown alert {h}" for h in headings if h not in alerts]
    for alert, url in alerts.items():
        if url != f"docs/runbook.md#{anchor(alert)}":
            problems.append(f"{alert}: runbook_url {url!r} does not point at its section")
    return problems


def test_every_alert_has_a_section_and_links_to_it() -> None:
    alerts = runbook_links(alert_rules())
    assert len(alerts) >= 10
    assert mismatches(alerts, sections(RUNBOOK.read_text(), "###", "Alerts")) == []


def test_the_check_catches_drift_both_ways() -> None:
    alerts = runbook_links(alert_rules())
    headings = sections(RUNBOOK.read_text(), "###", "Alerts")
    assert mismatches(alerts, headings[1:]) == [f"no runbook section for {headings[0]}"]
    assert mismatches(alerts, [*headings, "MemstreamGone"]) == ["runbook section for unknown alert MemstreamGone"]
    first = next(iter(alerts))
    wrong = {**alerts, first: "docs/runbook.md#elsewhere"}
    expected = f"{first}: runbook_url 'docs/runbook.md#elsewhere' does not point at its section"
    assert mismatches(wrong, headings) == [expected]


def test_the_procedures_are_there_and_internal_links_resolve() -> None:
    text = RUNBOOK.read_text()
    assert set(PROCEDURES) <= set(sections(text, "###", "Procedures"))
    headings = {anchor(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}
    targets = re.findall(r"\]\(#([^)]+)\)", text)
    assert targets and [t for t in targets if t not in headings] == []


def test_the_promtool_tests_expect_the_runbook_urls() -> None:
    tests_text = (PROM / "alerts_test.yml").read_text()
    for alert, url in runbook_links(alert_rules()).items():
        if f"alertname: {alert}\n" in tests_text:
            assert url in tests_text, alert


def test_readme_links_the_runbook() -> None:
    assert "(docs/runbook.md)" in (ROOT / "README.md").read_text()
