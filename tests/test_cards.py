"""Model cards: written beside every model from its metrics file (never typed), linked from the summary and
the HTML report; blocks of issue 21's metrics (external, subgroups, temperature, coverage) when present."""

import json
import sys

import pytest

from stages.lib.report.cards import NOTICE, card_markdown, notice


def ci(m, key) -> str:
    low, high = m[f"{key}_ci95"]
    return f"{m[key]:.3f} [{low:.3f}, {high:.3f}]"


def test_every_model_has_a_card_written_from_its_metrics_and_linked_from_the_report(demo_project):
    demo = demo_project / "demo"
    data = json.loads((demo / "metrics" / "data_report.json").read_text())
    pixel = json.loads((demo / "metrics" / "pixel_shortcut.json").read_text())
    summary, page = (demo / "metrics" / "summary.md").read_text(), (demo / "metrics" / "report.html").read_text()
    for name, metrics in [
        ("resnet18/seed42", "resnet18/seed42"),
        ("efficientnet_b0/seed42", "efficientnet_b0/seed42"),
        ("resnet18", "resnet18"),
        ("efficientnet_b0", "efficientnet_b0"),
        ("ensemble", "ensemble"),
    ]:
        card = (demo / "models" / f"{name}.card.md").read_text()
        m = json.loads((demo / "metrics" / f"{metrics}.json").read_text())
        assert f"](../models/{name}.card.md)" in summary and f'href="../models/{name}.card.md"' in page
        assert notice(NOTICE) in card and "SYNTHETIC data" in card
        test = card.split("## Test metrics (16 images)")[1]
        for key in ("accuracy", "macro_f1", "macro_auroc"):
            assert f" {ci(m['test'], key)} " in test and f" {ci(m['val'], key)} " in test
        for cls, pc in m["test"]["per_class"].items():
            assert (
                f"| {cls} | {pc['precision']:.3f} | {pc['recall']:.3f} | {pc['f1']:.3f} | {pc['auroc']:.3f} | "
                f"{pc['support']} |" in test
            )
        for split, counts in data["counts"].items():
            assert f"| {split} | " + " | ".join(map(str, counts.values())) + f" | {sum(counts.values())} |" in card
        audit = card.split("## Shortcut audit")[1].split("\n## ")[0]
        assert f"Its test macro-F1: **{data['shortcut']['test']['macro_f1']:.3f}**." in audit
        assert f"Its test macro-F1: **{pixel['test']['macro_f1']:.3f}**." in audit
        best = "shortcut" if data["shortcut"]["test"]["macro_f1"] >= pixel["test"]["macro_f1"] else "pixel_shortcut"
        assert f"This model scores {ci(m['test'], 'macro_f1')}. Against the stronger of the two ({best})" in audit
        # the lungs-hidden block: macro-F1 both ways, each class's recall both ways, the rule in words
        b, hidden = m["lungs_hidden"], card.split("## Lungs hidden")[1].split("\n## ")[0]
        assert (
            f"macro-F1 {b['macro_f1']:.3f} [" in hidden and f"against {ci(m['test'], 'macro_f1')} with them" in hidden
        )
        for cls, v in b["per_class"].items():
            assert f"| {cls} | {v['recall_with_lungs']:.3f} | {v['recall']:.3f} | " in hidden
        assert ("this model reads" in hidden) == bool(
            b["read_outside_lungs"]
        ) and "at least 50% of its recall and of its margin" in hidden
        assert f"Expected calibration error (test): {m['test']['ece']:.3f}" in card
        assert f"- Code: commit `{m['provenance']['git']['commit']}`" in card
        assert ("## Out-of-distribution flag" in card) == ("/" in name)  # a run's card: its OOD shares
        # issue 21's blocks, as the metrics file holds them: temperature and coverage on test, subgroups
        t, c = m["temperature"], m["coverage"]["test"]
        assert f"Temperature scaling, T = {t['value']:.3f} fitted on val" in card
        nll = t["test"]["nll"]
        assert (
            f"- NLL: {nll['before']:.3f} [{nll['before_ci95'][0]:.3f}, {nll['before_ci95'][1]:.3f}] -> "
            f"{nll['after']:.3f} [{nll['after_ci95'][0]:.3f}, {nll['after_ci95'][1]:.3f}]" in card
        )
        assert f"test coverage {c['coverage']:.3f} [{c['coverage_ci95'][0]:.3f}, {c['coverage_ci95'][1]:.3f}]" in card
        if "subgroups" in m:
            sub = card.split("## Subgroups")[1].split("\n## ")[0]
            for column, groups in m["subgroups"]["by"].items():
                for group, g in groups.items():
                    shown = ci(g, "macro_f1") if g["macro_f1_ci95"] else f"{g['macro_f1']:.3f} (too few films)"
                    assert f"| {column}: {group} | " in sub and shown in sub  # under 10 films: no CI
        # the demo's external set, as the card's own metrics file holds it (issue 22: external metrics with CIs)
        x = m["external"]["shifted"]
        ext = card.split("## External validation")[1].split("\n## ")[0]
        assert f"| shifted | {x['n']} | {ci(x, 'accuracy')} | {ci(x, 'macro_f1')} | " in ext
        d = x["drop"]
        assert f"{d['drop']:.3f} [{d['drop_ci95'][0]:.3f}, {d['drop_ci95'][1]:.3f}]" in ext and "COVID-19 absent" in ext
        assert ("ood" in x) == ("OOD flag" in ext) == ("/" in name)  # a run has an OOD score, an ensemble none
        if "ood" in x:
            assert f"OOD flag {x['ood']['flagged']:.1%} of its films" in ext
    run = (demo / "models" / "resnet18" / "seed42.card.md").read_text()
    assert "- `train`: pretrained=False, lr=0.001," in run and "one training run (seed 42)" in run


def test_issue_21_blocks_appear_when_the_metrics_hold_them(demo_project):
    demo = demo_project / "demo"
    m = json.loads((demo / "metrics" / "resnet18" / "seed42.json").read_text())
    data = json.loads((demo / "metrics" / "data_report.json").read_text())
    scored = {k: m["test"][k] for k in ("accuracy", "accuracy_ci95", "macro_f1", "macro_f1_ci95")}
    per_class = {**m["test"]["per_class"], "COVID-19": {"absent": True, "support": 0, "predicted_as": 2}}
    m |= {
        "external": {
            "hospital_b": {
                **scored,
                "per_class": per_class,
                "absent_classes": ["COVID-19"],
                "drop": {"test_macro_f1": 0.9, "external_macro_f1": 0.7, "drop": 0.2, "drop_ci95": [0.05, 0.35]},
            }
        }
    }
    m.pop("subgroups", None)
    card = card_markdown("r", m, data, "notice", "m.json")
    ext = card.split("## External validation")[1].split("## ")[0]
    n = sum(c["support"] for c in per_class.values())
    assert f"| hospital_b | {n} | {ci(m['test'], 'accuracy')} | {ci(m['test'], 'macro_f1')} | n/a [n/a, n/a] |" in ext
    assert (
        "from the internal test 0.900 to 0.700: 0.200 [0.050, 0.350] (over the classes present; absent here: COVID-19)"
        in ext
        and "COVID-19 absent." in ext
        and "COVID-19 0." not in ext
        and "OOD" not in ext
    )
    assert "## External validation" not in card_markdown("r", {**m, "external": {}}, data, "notice", "m.json")
    assert "## Subgroups" not in card
    m["subgroups"] = {
        "split": "test",
        "overall_macro_f1": 0.9,
        "by": {"sex": {"F": {**scored, "n": 7, "below_overall": True}}},
    }
    card = card_markdown("r", m, data, "notice", "m.json")
    assert f"| sex: F | 7 | {ci(m['test'], 'accuracy')} |" in card.split("## Subgroups")[1]
    assert "**Wholly below it (95% CI): sex: F.**" in card
    for key in ("temperature", "coverage"):
        m.pop(key)
    assert "Temperature scaling" not in card_markdown("r", m, data, "notice", "m.json")


def test_a_card_asked_for_a_run_with_no_metrics_is_refused(tmp_path, monkeypatch, capsys):
    import stages.card

    monkeypatch.setattr(
        sys,
        "argv",
        ["card", "--metrics", str(tmp_path / "metrics/resnet18/seed7.json"), "--card", str(tmp_path / "seed7.card.md")],
    )
    with pytest.raises(SystemExit) as done:
        stages.card.main()
    assert done.value.code == 2 and capsys.readouterr().err.strip() == (
        f"error: no metrics for seed7 yet ({tmp_path}/metrics/resnet18/seed7.json not found): a card is written from "
        "them; run evaluate first (dvc repro)"
    )
    assert list(tmp_path.iterdir()) == []
