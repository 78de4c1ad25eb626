"""Autoscaling signals: rates from samples, the suggested worker count, EMF lines."""

from __future__ import annotations

import json

import pytest

from dtqs.runtime.emf import emf_line, enabled
from dtqs.runtime.stats import Autoscale, QueueStats, rates, suggest_workers

NOW = 1_000_000_000


def test_rates_use_the_newest_sample_at_least_a_window_old():
    samples = [  # newest first: ms, attempts finished, tasks open
        f"{NOW - 5_000}:990:20",
        f"{NOW - 60_000}:400:100",  # the one used
        f"{NOW - 120_000}:0:0",
    ]
    arrival, completion = rates(samples, NOW, finished=1000, open_=40)
    assert completion == pytest.approx(600 / 60)
    assert arrival == pytest.approx((600 + 40 - 100) / 60)  # finished + growth of open


def test_rates_fall_back_to_the_oldest_sample_and_skip_junk():
    arrival, completion = rates(["junk", f"{NOW - 10_000}:0:0"], NOW, 50, 50)
    assert (arrival, completion) == (pytest.approx(10.0), pytest.approx(5.0))
    assert rates([], NOW, 5, 5) == (0.0, 0.0)
    assert rates([f"{NOW}:0:0"], NOW, 5, 5) == (0.0, 0.0)  # no time has passed


@pytest.mark.parametrize(
    ("backlog", "in_flight", "rate", "mean_s", "concurrency", "expected"),
    [
        (0, 0, 50.0, 0.1, 8, 0),  # idle: scale to zero allowed
        (0, 1, 0.0, 0.1, 8, 1),  # one task leased: never zero mid-task
        (1, 0, 0.0, None, 8, 1),  # ready but never timed: one slot per task
        (40, 0, 0.0, None, 8, 5),
        (0, 0, 0.0, None, 8, 0),
        (0, 4, 100.0, 0.5, 10, 5),  # Little's law: 100/s x 0.5 s = 50 slots
        (600, 0, 0.0, 1.0, 10, 1),  # 600 tasks of 1 s drained in 60 s: 10 slots
        (0, 30, 0.0, 0.01, 10, 3),  # never fewer than the tasks leased now
    ],
)
def test_suggested_workers(backlog, in_flight, rate, mean_s, concurrency, expected):
    assert suggest_workers(backlog, in_flight, rate, mean_s, concurrency) == expected


def test_emf_line_is_one_cloudwatch_document_per_queue():
    auto = Autoscale(
        backlog=7, oldest_age_s=1.25, in_flight=2, arrival_rate=3.5, completion_rate=3.0,
        suggested_workers=2,
    )  # fmt: skip
    stats = QueueStats("mail", {"high": 7}, 0, 2, 0, False, 1.25, autoscale=auto)
    doc = json.loads(emf_line(stats, 1234))
    meta = doc["_aws"]
    assert meta["Timestamp"] == 1234
    (directive,) = meta["CloudWatchMetrics"]
    assert directive["Namespace"] == "dtqs" and directive["Dimensions"] == [["Queue"]]
    names = [m["Name"] for m in directive["Metrics"]]
    assert names == [
        "Backlog", "OldestTaskAgeSeconds", "InFlight", "ArrivalRate", "CompletionRate",
        "SuggestedWorkers",
    ]  # fmt: skip
    assert {n: doc[n] for n in names} == {
        "Backlog": 7, "OldestTaskAgeSeconds": 1.25, "InFlight": 2, "ArrivalRate": 3.5,
        "CompletionRate": 3.0, "SuggestedWorkers": 2,
    }  # fmt: skip
    assert doc["Queue"] == "mail"
    assert "Deployment" not in doc


def test_emf_line_carries_the_deployment_dimension_when_named():
    """Without it, staging and prod in one account and region published one series
    and each autoscaler followed the other's backlog."""
    stats = QueueStats("mail", {"high": 1}, 0, 0, 0, False, 0.0)
    doc = json.loads(emf_line(stats, 1, "prod"))
    assert doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["Deployment", "Queue"]]
    assert (doc["Deployment"], doc["Queue"]) == ("prod", "mail")


@pytest.mark.parametrize(
    ("value", "on"), [("1", True), ("true", True), (" On ", True), ("0", False), ("", False)]
)
def test_emf_switch_reads_common_spellings(value, on):
    assert enabled({"DTQS_CLOUDWATCH_EMF": value}) is on
    assert enabled({}) is False


def test_emf_switch_refuses_a_typo_instead_of_staying_silent():
    with pytest.raises(ValueError, match="DTQS_CLOUDWATCH_EMF='ture'"):
        enabled({"DTQS_CLOUDWATCH_EMF": "ture"})
