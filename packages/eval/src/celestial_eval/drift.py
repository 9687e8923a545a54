"""Drift: does a served model still see what it was validated on? ``celestial-eval drift``.

A served model's prediction log (`celestial_eval.prediction_logs`) is compared
with the model's own reference, ``reference.jsonl`` in its folder: its
validation split, answered as the server answers (`celestial_models.reference`).
Only the log's records of that model (same ``model`` hash) count. Checks:

- ``class_mix``: the share of each answer, ``unknown`` included: population
  stability index (PSI) and a chi-square test of homogeneity;
- ``unknown_rate``: the share of answers that are ``unknown``: the change
  (log minus reference) and a chi-square test;
- ``confidence`` (probability of the closest class), ``score`` (the
  unknown-image score) and each image feature (``feature:mean_red``, ...):
  two-sample Kolmogorov-Smirnov statistic (largest gap between the two
  cumulative distributions) and its p-value.

A check fails when its statistic is beyond its threshold (the size of the
shift: the ``drift`` params) and its p-value is below ``p_value`` (the shift
is not sampling noise: a small log cannot fail on luck alone, a large one
cannot fail on a negligible shift). NumPy and ``scipy.special`` only: the
command stays fast (see ``bench/bench_drift.py``).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from celestial_data.command import output_folder
from celestial_data.params import Params
from celestial_eval.drift_report import build_page
from celestial_eval.errors import LogError, MissingInputError
from celestial_eval.prediction_logs import PredictionLog, read_log
from celestial_models.model_dir import MODEL_FILE, file_sha256
from celestial_models.prediction_log import REFERENCE_FILE, PredictionRecord, feature_names

__all__ = [
    "OUTPUTS",
    "Check",
    "DriftParams",
    "Sample",
    "category_shift",
    "ks_test",
    "markdown_summary",
    "measure_drift",
    "run_drift",
    "summary_lines",
]

#: File names written into the output folder.
OUTPUTS = {"json": "drift.json", "html": "drift.html"}


class DriftParams(Params):
    """The ``drift`` section of ``params.yaml``: when a log has drifted from the reference."""

    section = "drift"

    p_value: float = Field(
        0.01,
        gt=0,
        lt=1,
        description="a check fails only when its test's p-value is below this (the shift is "
        "not sampling noise) and its statistic beyond its threshold",
    )
    class_mix_psi: float = Field(
        0.2,
        gt=0,
        description="population stability index of the answers' class mix (`unknown` "
        "included) above which it drifted; 0.1-0.2 is the usual 'moderate shift', above "
        "0.2 'significant'",
    )
    unknown_rate_change: float = Field(
        0.1,
        gt=0,
        le=1,
        description="change of the share of `unknown` answers (either way, absolute: 0.1 is "
        "10 points) above which it drifted",
    )
    confidence_ks: float = Field(
        0.15,
        gt=0,
        le=1,
        description="Kolmogorov-Smirnov statistic of the closest class's probability above "
        "which it drifted (0: same distribution, 1: no overlap)",
    )
    score_ks: float = Field(
        0.15,
        gt=0,
        le=1,
        description="Kolmogorov-Smirnov statistic of the unknown-image score above which it "
        "drifted",
    )
    feature_ks: float = Field(
        0.15,
        gt=0,
        le=1,
        description="Kolmogorov-Smirnov statistic of each image feature (channel means, "
        "contrast, background share) above which it drifted",
    )
    min_records: int = Field(
        50,
        ge=1,
        description="fewest logged answers of the model to judge; fewer is an error (exit 2), "
        "not a verdict",
    )


@dataclass(frozen=True)
class Sample:
    """The columns drift compares, from a list of records."""

    labels: list[str]
    unknown: np.ndarray
    """bool ``(N,)``."""
    confidence: np.ndarray
    """``(N,)`` probability of the closest class."""
    scores: np.ndarray
    """The unknown-image scores of the records that have one."""
    features: np.ndarray
    """``(N, F)`` image features."""

    @classmethod
    def of(cls, records: Sequence[PredictionRecord]) -> Sample:
        """The sample of ``records`` (at least one, all with the same number of features).

        Raises:
            LogError: If the records disagree on the number of features.
        """
        widths = Counter(len(r.features) for r in records)
        if len(widths) > 1:
            raise LogError(
                f"The records hold different numbers of image features ({dict(widths)}): "
                "they were not written by one model. Pass the log of one model."
            )
        return cls(
            labels=[r.label for r in records],
            unknown=np.fromiter((r.unknown for r in records), bool, len(records)),
            confidence=np.fromiter((r.top_k[0][1] for r in records), float, len(records)),
            scores=np.array([r.score for r in records if r.score is not None], dtype=float),
            features=np.array([r.features for r in records], dtype=float),
        )


@dataclass(frozen=True)
class Check:
    """One comparison of the log with the reference, and its verdict."""

    name: str
    test: str
    """``psi``, ``change`` or ``ks``."""
    statistic: float | None
    threshold: float
    p_value: float | None
    drift: bool
    reference: dict[str, Any]
    """A summary of the reference (``shares``, ``rate`` or ``mean``)."""
    log: dict[str, Any]
    """The same summary of the log."""
    skipped: str | None = None
    """Why the check could not be made (too few values), or None."""

    def describe(self) -> str:
        """One line: the verdict, the statistic against its threshold, and what moved."""
        verdict = "DRIFT" if self.drift else "skip " if self.skipped else "ok   "
        if self.skipped:
            return f"{verdict} {self.name:<22} skipped: {self.skipped}"
        assert self.statistic is not None and self.p_value is not None
        over = abs(self.statistic) > self.threshold
        statistic = format(self.statistic, "+.3f" if self.test == "change" else ".3f")
        # Over the threshold without drift: the p-value says chance explains it.
        chance = ", too high to call it drift" if over and not self.drift else ""
        return (
            f"{verdict} {self.name:<22} {self.test} {statistic} {'>' if over else '<='} "
            f"{self.threshold:g} (p {self.p_value:.2g}{chance}); {self.moved()}"
        )

    def moved(self) -> str:
        """What moved, reference to log: the rate, the mean, or the share that moved most."""
        for key in ("rate", "mean"):
            if key in self.reference:
                return f"{key} {self.reference[key]:.3g} -> {self.log[key]:.3g}"
        before, after = self.reference["shares"], self.log["shares"]
        label = max(before, key=lambda name: abs(after[name] - before[name]))
        return f"{label} {before[label]:.3g} -> {after[label]:.3g}"


def ks_test(reference: np.ndarray, log: np.ndarray) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov test: the statistic and its asymptotic p-value.

    The statistic is the largest gap between the two empirical cumulative
    distributions; the p-value is Kolmogorov's limit distribution with
    Stephens's small-sample correction.
    """
    # Imported here: every celestial-eval command loads this module (0.1 s).
    from scipy.special import kolmogorov

    a, b = np.sort(reference), np.sort(log)
    both = np.concatenate([a, b])
    gap = np.abs(
        np.searchsorted(a, both, side="right") / len(a)
        - np.searchsorted(b, both, side="right") / len(b)
    )
    statistic = float(gap.max())
    root = math.sqrt(len(a) * len(b) / (len(a) + len(b)))
    return statistic, float(min(1.0, kolmogorov((root + 0.12 + 0.11 / root) * statistic)))


def category_shift(reference: Sequence[int], log: Sequence[int]) -> tuple[float, float]:
    """PSI and chi-square p-value of two samples' counts over the same categories.

    PSI is ``sum((q - p) * ln(q / p))`` over the categories' shares, each
    count plus one half so that a category absent from one sample stays
    finite; the p-value is that of the chi-square test of homogeneity of the
    2 x K table.
    """
    from scipy.special import chdtrc

    table = np.array([reference, log], dtype=float)
    shares = (table + 0.5) / (table.sum(axis=1, keepdims=True) + 0.5 * table.shape[1])
    psi = float(np.sum((shares[1] - shares[0]) * np.log(shares[1] / shares[0])))
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return psi, 1.0
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    chi2 = float(np.sum((table - expected) ** 2 / expected))
    return psi, float(chdtrc(table.shape[1] - 1, chi2))


def _judge(statistic: float, threshold: float, p_value: float, params: DriftParams) -> bool:
    return abs(statistic) > threshold and p_value < params.p_value


def _class_mix(reference: Sample, log: Sample, params: DriftParams) -> Check:
    labels = sorted(set(reference.labels) | set(log.labels))
    counts = [Counter(s.labels) for s in (reference, log)]
    psi, p = category_shift(*([c[label] for label in labels] for c in counts))
    shares = [
        {"shares": {label: round(c[label] / len(s.labels), 6) for label in labels}}
        for c, s in zip(counts, (reference, log), strict=True)
    ]
    return Check(
        "class_mix",
        "psi",
        psi,
        params.class_mix_psi,
        p,
        _judge(psi, params.class_mix_psi, p, params),
        shares[0],
        shares[1],
    )


def _unknown_rate(reference: Sample, log: Sample, params: DriftParams) -> Check:
    rates = [float(s.unknown.mean()) for s in (reference, log)]
    _, p = category_shift(
        *([int(len(s.unknown) - s.unknown.sum()), int(s.unknown.sum())] for s in (reference, log))
    )
    change = rates[1] - rates[0]
    return Check(
        "unknown_rate",
        "change",
        change,
        params.unknown_rate_change,
        p,
        _judge(change, params.unknown_rate_change, p, params),
        {"rate": round(rates[0], 6)},
        {"rate": round(rates[1], 6)},
    )


def _distribution(
    name: str, reference: np.ndarray, log: np.ndarray, threshold: float, params: DriftParams
) -> Check:
    if min(len(reference), len(log)) < 2:
        return Check(
            name,
            "ks",
            None,
            threshold,
            None,
            False,
            {"values": len(reference)},
            {"values": len(log)},
            skipped=f"{len(reference)} reference and {len(log)} logged values; 2 each needed",
        )
    statistic, p = ks_test(reference, log)
    return Check(
        name,
        "ks",
        statistic,
        threshold,
        p,
        _judge(statistic, threshold, p, params),
        {"mean": round(float(reference.mean()), 6), "values": len(reference)},
        {"mean": round(float(log.mean()), 6), "values": len(log)},
    )


def distributions(reference: Sample, log: Sample) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(check name, reference values, log values)`` of each numeric check."""
    names = feature_names(reference.features.shape[1] - 2)
    return [
        ("confidence", reference.confidence, log.confidence),
        ("score", reference.scores, log.scores),
        *(
            (f"feature:{name}", reference.features[:, i], log.features[:, i])
            for i, name in enumerate(names)
        ),
    ]


def measure_drift(reference: Sample, log: Sample, params: DriftParams) -> list[Check]:
    """Every check of ``log`` against ``reference``.

    Raises:
        LogError: If the two hold different numbers of image features.
    """
    if reference.features.shape[1] != log.features.shape[1]:
        raise LogError(
            f"The log's records hold {log.features.shape[1]} image features and the "
            f"reference's {reference.features.shape[1]}: they are not of one model. Pass the "
            "log of the model in --model."
        )
    thresholds = {"confidence": params.confidence_ks, "score": params.score_ks}
    return [
        _class_mix(reference, log, params),
        _unknown_rate(reference, log, params),
        *(
            _distribution(name, ref, cur, thresholds.get(name, params.feature_ks), params)
            for name, ref, cur in distributions(reference, log)
        ),
    ]


def read_reference(model_dir: Path) -> tuple[str, list[PredictionRecord], PredictionLog]:
    """The model's hash and its reference records.

    Raises:
        MissingInputError: If the folder or its reference is missing.
        LogError: If the reference is corrupt, mixes models or is not of ``model.keras``.
    """
    if not model_dir.is_dir():
        raise MissingInputError(
            f"Model folder {model_dir} not found. Pass --model the folder the server serves "
            "(a project's model/, from 'dvc repro' or 'dvc pull')."
        )
    path = model_dir / REFERENCE_FILE
    if not path.is_file():
        raise MissingInputError(
            f"Model folder {model_dir} has no {REFERENCE_FILE}, the reference drift compares "
            "with (written by training since celestial-models writes it). Retrain the model "
            "(dvc repro in its project) or fetch it ('dvc pull')."
        )
    reference = read_log([path])
    models = Counter(r.model for r in reference.records)
    if len(models) > 1:
        raise LogError(f"{path} mixes records of {len(models)} models. Retrain the model.")
    (model,) = models
    if (model_dir / MODEL_FILE).is_file() and file_sha256(model_dir / MODEL_FILE) != model:
        raise LogError(
            f"{path} is the reference of model {model[:12]}, but {model_dir / MODEL_FILE} is "
            "another model: the folder was changed by hand. Retrain it (dvc repro) or restore "
            "it ('dvc checkout dvc.yaml')."
        )
    return model, reference.records, reference


def _time_span(records: Sequence[PredictionRecord]) -> dict[str, str | None]:
    times = [r.time for r in records if r.time]
    return {"first": min(times, default=None), "last": max(times, default=None)}


def run_drift(
    logs: Sequence[str | Path],
    model_dir: str | Path,
    out_dir: str | Path,
    params: DriftParams | Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Compare prediction logs with a model's reference; write ``drift.json`` and ``drift.html``.

    Args:
        logs: Log files, or folders whose ``*.jsonl`` are read.
        model_dir: The model folder (holding ``reference.jsonl``).
        out_dir: Where to write the outputs (created).
        params: The ``drift`` params (default: their defaults).

    Returns:
        The verdict, as ``drift.json`` holds it.

    Raises:
        MissingInputError: If a log, the model folder or its reference is missing.
        LogError: If a log is corrupt or empty, holds no (or too few) records of
            the model, or the reference is unusable.
    """
    params = DriftParams.of(params)
    model_dir = Path(model_dir)
    model, reference_records, reference_log = read_reference(model_dir)
    log = read_log(logs)
    kept = [r for r in log.records if r.model == model]
    others = Counter(r.model for r in log.records if r.model != model)
    if not kept:
        found = ", ".join(f"{m[:12] or '(none)'} ({n})" for m, n in others.most_common(3))
        raise LogError(
            f"None of the {len(log.records)} logged answers is of model {model[:12]} "
            f"({model_dir}); the log holds models {found}. Pass --model the folder of the "
            "model that was served."
        )
    if len(kept) < params.min_records:
        raise LogError(
            f"Only {len(kept)} logged answers are of model {model[:12]}; drift needs at least "
            f"{params.min_records} (params drift.min_records). Wait for more traffic or "
            "lower drift.min_records."
        )
    reference, current = Sample.of(reference_records), Sample.of(kept)
    checks = measure_drift(reference, current, params)
    failed = [check.name for check in checks if check.drift]
    result = {
        "drift": bool(failed),
        "failed": failed,
        "model": model,
        "reference": {
            "path": str(model_dir / REFERENCE_FILE),
            "records": len(reference_records),
        },
        "log": {
            "files": [str(path) for path in log.files],
            "records": len(log.records),
            "kept": len(kept),
            "other_models": sum(others.values()),
            "skipped_lines": len(log.warnings),
            "time_span": _time_span(kept),
        },
        "checks": [asdict(check) for check in checks],
        "params": params.dump(),
        "warnings": reference_log.warnings + log.warnings,
    }
    mix = [checks[0].reference["shares"], checks[0].log["shares"]]
    class_mix = (list(mix[0]), list(mix[0].values()), list(mix[1].values()))
    out = output_folder(out_dir, "drift report's folder")
    (out / OUTPUTS["json"]).write_text(json.dumps(result, indent=2) + "\n")
    changes = ["" if c.skipped else c.moved().replace("->", "→") for c in checks]
    page = build_page(result, class_mix, distributions(reference, current), changes)
    (out / OUTPUTS["html"]).write_text(page, encoding="utf-8")
    return result


def summary_lines(result: dict[str, Any]) -> list[str]:
    """The verdict for a terminal: a headline, then one line per check."""
    log = result["log"]
    span = log["time_span"]
    checks = [Check(**check) for check in result["checks"]]
    headline = (
        f"DRIFT: {len(result['failed'])} of {len(checks)} checks failed"
        if result["drift"]
        else f"no drift: {len(checks)} checks passed"
    )
    lines = [
        f"{headline} on {log['kept']} answers of model {result['model'][:12]} "
        f"({span['first'] or '?'} to {span['last'] or '?'}) against "
        f"{result['reference']['records']} reference answers"
    ]
    if log["other_models"]:
        lines.append(f"{log['other_models']} logged answers of other models left out")
    lines += ["  " + check.describe() for check in checks]
    return lines


def markdown_summary(result: dict[str, Any], html: str = "") -> str:
    """The verdict as Markdown (a CI job summary): headline and a table of the checks."""
    log = result["log"]
    span = log["time_span"]
    title = f"## Drift found: {', '.join(result['failed'])}" if result["drift"] else "## No drift"
    lines = [
        title,
        "",
        f"{log['kept']} answers of model `{result['model'][:12]}` from {span['first'] or '?'} "
        f"to {span['last'] or '?'}, against {result['reference']['records']} reference "
        f"answers; {log['other_models']} answers of other models left out."
        + (f" Full report: {html}." if html else ""),
        "",
        "| check | test | statistic | threshold | p-value | moved (reference → log) | verdict |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for check in (Check(**fields) for fields in result["checks"]):
        moved = "" if check.skipped else check.moved().replace("->", "→")
        verdict = "skipped" if check.skipped else "**drift**" if check.drift else "ok"
        statistic = "-" if check.statistic is None else f"{check.statistic:.3f}"
        p_value = "-" if check.p_value is None else f"{check.p_value:.2g}"
        lines.append(
            f"| {check.name} | {check.test} | {statistic} | {check.threshold:g} | "
            f"{p_value} | {moved} | {verdict} |"
        )
    return "\n".join(lines) + "\n"
