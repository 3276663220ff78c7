"""Parsers: pods.jsonl, the original artifact's layout, instrumentation records, containerd logs."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastiov_lib.analysis import containerd_log
from fastiov_lib.analysis import instrumentation
from fastiov_lib.bench import stage_records
from fastiov_lib.analysis import original
from fastiov_lib.analysis.pods import read_pods
from synthetic_runs import write_run

FIXTURES = Path("/work/shared/fixtures/upstream-artifact")
JOURNAL = FIXTURES / "journal-kata-containerd.log"

ZAP = ('2024-04-30T19:43:00.500000000+08:00\tINFO\t{subject}\t'
       '{{"record_id": "start", "start_t": "2024-04-30T19:43:00.250000000+08:00", "elapsed_ns": {el}{extra}}}')


def zap_line(subject: str = "CNI_kata_create_sandbox1", el: int = 250_000_000, extra: str = "") -> str:
    return ZAP.format(subject=subject, el=el, extra=extra)


# -- pods.jsonl ------------------------------------------------------------------------------------

def test_read_pods_computes_latencies_from_monotonic_timestamps(tmp_path):
    write_run(tmp_path / "r", variants={"none": 100.0}, concurrency=(2,), repeats=1, noise_ms=0.0, slope_ms=0.0)
    df, rep = read_pods(tmp_path / "r")
    assert rep.ok and rep.records == 2
    assert df["startup_ms"].tolist() == pytest.approx([100.0, 100.0])
    assert df["network_ready_ms"].tolist() == pytest.approx([105.0, 105.0])
    assert df["app_completion_ms"].isna().all()


def test_read_pods_reports_bad_lines_with_their_numbers(tmp_path):
    run = write_run(tmp_path / "r", variants={"none": 100.0}, concurrency=(1,), repeats=1)
    with open(run / "pods.jsonl", "a") as fh:
        fh.write('[1, 2]\n')                                   # line 2: not an object
        fh.write('{"run_id": "x", "status": "ok"}\n')          # line 3: not a pod record
        fh.write('{"run_id": "x", "testbed": "t", "status": "weird"}\n')  # line 4
        fh.write('{"run_id": "tr')                             # line 5: truncated
    df, rep = read_pods(run)
    assert len(df) == 1
    lines = {n: reason for _, n, reason in rep.skipped}
    assert sorted(lines) == [2, 3, 4, 5]
    assert "object" in lines[2] and "truncated" in lines[5]
    assert "not a pod record" in lines[3]


def test_read_pods_of_missing_file_is_empty_not_an_error(tmp_path):
    df, rep = read_pods(tmp_path)
    assert df.empty and rep.records == 0
    assert "startup_ms" in df.columns


# -- instrumentation records ------------------------------------------------------------------------

def test_instrumentation_parser_reads_zap_console_records():
    lines = [zap_line(extra=', "sandbox": "abc"'),
             "2024-04-30T19:43:01.1+0800\tINFO\tcaller.go:12\tcreateVM3-4-1\t"
             '{"record_id": "test", "start_t": "2024-04-30T19:43:01Z", "elapsed_ns": 7}']
    df, rep = instrumentation.parse_instrumentation_lines(lines, "f.log", "kata", 42)
    assert rep.ok and rep.records == 2
    assert df["subject"].tolist() == ["CNI_kata_create_sandbox1", "createVM3-4-1"]
    assert df["elapsed_ns"].tolist() == [250_000_000, 7]
    assert json.loads(df["extra"].iloc[0]) == {"sandbox": "abc"}
    assert df["start_t"].iloc[0] == pd.Timestamp("2024-04-30T11:43:00.25", tz="UTC")
    assert df["time"].iloc[1] == pd.Timestamp("2024-04-30T11:43:01.1", tz="UTC")
    assert (df["pid"] == 42).all() and (df["component"] == "kata").all()


@pytest.mark.parametrize("line, reason", [
    ("just some text", "tab-separated"),
    ("yesterday\tINFO\ts\t{}", "RFC3339"),
    ("2024-04-30T19:43:00Z\tLOUD\ts\t{}", "unknown level"),
    ("2024-04-30T19:43:00Z\tINFO\ts\tno json here", "not a JSON object"),
    ('2024-04-30T19:43:00Z\tINFO\ts\t{"record_id": "x", "start_t": "2024-04-30T19:4', "not valid JSON"),
    ('2024-04-30T19:43:00Z\tINFO\ts\t{"record_id": "x", "start_t": "2024-04-30T19:43:00Z"}', "elapsed_ns"),
    ('2024-04-30T19:43:00Z\tINFO\ts\t{"start_t": "2024-04-30T19:43:00Z", "elapsed_ns": 1.5}', "elapsed_ns"),
    ('2024-04-30T19:43:00Z\tINFO\ts\t{"start_t": "2024-04-30T19:43:00Z", "elapsed_ns": -4}', "negative"),
    ('2024-04-30T19:43:00Z\tINFO\ts\t{"start_t": "later", "elapsed_ns": 4}', "start_t"),
])
def test_instrumentation_parser_reports_each_kind_of_bad_line(line, reason):
    df, rep = instrumentation.parse_instrumentation_lines([zap_line(), line, zap_line()], "x.log")
    assert rep.records == 2 and len(df) == 2
    assert len(rep.skipped) == 1
    source, number, why = rep.skipped[0]
    assert (source, number) == ("x.log", 2)
    assert reason in why


def test_instrumentation_parser_reports_impossible_dates_after_parsing():
    bad_month = zap_line().replace("2024-04-30T19:43:00.500000000", "2024-13-30T19:43:00.500000000")
    bad_start = zap_line().replace('"start_t": "2024-04-30T19', '"start_t": "2024-04-31T19')
    df, rep = instrumentation.parse_instrumentation_lines([zap_line(), bad_month, bad_start, zap_line()], "d.log")
    assert df["line"].tolist() == [1, 4]
    assert [(n, "start_t" in r) for _, n, r in rep.skipped] == [(2, False), (3, True)]
    assert rep.records == 2


def test_canonical_and_unusual_layouts_of_a_record_parse_alike():
    canonical = zap_line(extra=', "sandbox": "abc"')
    reordered = ('2024-04-30T19:43:00.500000000+08:00\tINFO\tCNI_kata_create_sandbox1\t'
                 '{"elapsed_ns": 250000000, "sandbox": "abc", "start_t": "2024-04-30T19:43:00.250000000+08:00", '
                 '"record_id": "start"}')
    a, _ = instrumentation.parse_instrumentation_lines([canonical])
    b, _ = instrumentation.parse_instrumentation_lines([reordered])
    cols = ["time", "level", "subject", "record_id", "start_t", "elapsed_ns"]
    assert a[cols].equals(b[cols])
    assert json.loads(a["extra"].iloc[0]) == json.loads(b["extra"].iloc[0]) == {"sandbox": "abc"}


subjects = st.from_regex(r"[A-Za-z_][A-Za-z0-9_-]{0,30}", fullmatch=True)
labels = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\t\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"), max_size=20)


@settings(max_examples=60, deadline=None)
@given(records=st.lists(st.tuples(subjects, labels, st.integers(0, 2**62), st.dictionaries(
    st.from_regex(r"[a-z]{1,8}", fullmatch=True).filter(lambda k: k not in ("record_id", "start_t", "elapsed_ns")),
    labels, max_size=3)), max_size=20))
def test_instrumentation_parser_keeps_every_generated_record(records):
    lines = []
    for subject, rid, el, extra in records:
        fields = {"record_id": rid, "start_t": "2024-01-02T03:04:05.123456789Z", "elapsed_ns": el, **extra}
        lines.append(f"2024-01-02T03:04:06.5Z\tINFO\t{subject}\t{json.dumps(fields)}")
    df, rep = instrumentation.parse_instrumentation_lines(lines)
    assert rep.ok and len(df) == len(records)
    assert df["subject"].tolist() == [r[0] for r in records]
    assert df["record_id"].tolist() == [r[1] for r in records]
    assert df["elapsed_ns"].tolist() == [r[2] for r in records]
    assert [json.loads(e) if e else {} for e in df["extra"]] == [r[3] for r in records]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(garbage=st.lists(st.text(max_size=120), max_size=15), cut=st.integers(0, 200))
def test_instrumentation_parser_is_never_fatal_and_accounts_for_every_line(garbage, cut):
    lines = [zap_line()[:cut]] + [g.replace("\n", " ") for g in garbage] + [zap_line()]
    df, rep = instrumentation.parse_instrumentation_lines(lines)
    nonblank = sum(1 for ln in lines if ln.strip())
    assert rep.records + len(rep.skipped) == nonblank
    assert rep.records >= 1 and len(df) == rep.records


def test_instrumentation_file_names_give_component_and_process(tmp_path):
    per_process = tmp_path / "kata_logs" / "cnicmp-4242.log"
    merged = tmp_path / "kata_logs" / "kata-20240430194300.log"
    per_process.parent.mkdir()
    per_process.write_text(zap_line() + "\n")
    merged.write_text(zap_line() + "\n" + zap_line("createVM3-4") + "\n")
    (tmp_path / "notes.log").write_text("no records here\n")
    df, rep = instrumentation.parse_instrumentation_dir(tmp_path)
    assert rep.records == 3
    assert set(df["component"]) == {"kata"}
    assert sorted(df["pid"].unique().tolist()) == [-1, 4242]


def test_stages_csv_labels_records_with_the_round_they_fall_in(tmp_path):
    from synthetic_runs import T0
    run = write_run(tmp_path / "r", variants={"vanilla": 500.0}, concurrency=(2, 4), repeats=1, noise_ms=0.0)
    # rounds start at T0 and T0 + 2 s; put one record in each and one far outside
    def rec(t_ns: int) -> str:
        ts = pd.Timestamp(t_ns, tz="UTC").isoformat().replace("+00:00", "Z")
        return f'{ts}\tINFO\tstage1\t{{"record_id": "x", "start_t": "{ts}", "elapsed_ns": 1000000}}'
    (run / "logs" / "kata_logs").mkdir(parents=True)
    (run / "logs" / "kata_logs" / "cnicmp-7.log").write_text(
        "\n".join([rec(T0 + 100_000_000), rec(T0 + 2_100_000_000), rec(T0 + 60_000_000_000)]) + "\n")
    path, rep = stage_records.build_stages_csv(run)
    assert path is not None and rep.records == 3
    stages = instrumentation.read_stages(run)
    assert list(stages.columns) == instrumentation.STAGE_COLUMNS
    assert stages["concurrency"].tolist()[:2] == [2, 4]
    assert pd.isna(stages["concurrency"].iloc[2])
    assert stages["variant"].iloc[0] == "vanilla"


# -- the original artifact's result layout --------------------------------------------------------

def make_original(root: Path, levels=(10, 20), broken: bool = False) -> Path:
    rd = root / "logs" / "time_kata_04301943"
    for c in levels:
        d = rd / f"con_{c:03d}"
        d.mkdir(parents=True)
        for i in range(c):
            start = 1714477380000 + i
            d.joinpath(f"_pod_{i:03d}_001.txt").write_text(f"sb{c}-{i} {start} {start + 1100 + c} {1000 + c}\n")
    (rd / "versions.txt").write_text("6.4.0-rc5test\ncontainerd containerd.io v1.3.10 abc\ncrictl version v1.26.0\n"
                                     "kata-runtime  : 3.1.3\n")
    if broken:
        (rd / "con_010" / "_pod_010_001.txt").write_text("sbX 1714477380000 oops 12\n")
        (rd / "con_010" / "_pod_011_001.txt").write_text("")
    return root


def test_original_layout_parses_every_pod_file(tmp_path):
    df, rep, versions = original.parse_original_layout(make_original(tmp_path))
    assert rep.ok and len(df) == 30
    assert sorted(df["concurrency"].unique().tolist()) == [10, 20]
    assert (df.loc[df["concurrency"] == 20, "latency_ms"] == 1020).all()
    v = versions["time_kata_04301943"]
    assert v["kernel"] == "6.4.0-rc5test" and "v1.3.10" in v["containerd"] and "3.1.3" in v["kata"]


def test_original_layout_reports_broken_and_empty_pod_files(tmp_path):
    df, rep, _ = original.parse_original_layout(make_original(tmp_path, broken=True))
    reasons = [r for _, _, r in rep.skipped]
    assert any("not numbers" in r for r in reasons)
    assert sum("no result line" in r for r in reasons) == 2
    assert rep.records == 30 and df["latency_ms"].isna().sum() == 2


def test_import_original_writes_a_run_directory(tmp_path):
    src = make_original(tmp_path / "orig", broken=True)
    run, rep = original.import_original_results(src, tmp_path / "imported", variant="vanilla")
    pods, prep = read_pods(run.path)
    assert prep.ok and len(pods) == 32
    assert (pods["testbed_kind"] == "fastiov").all() and (pods["variant"] == "vanilla").all()
    ok = pods[pods["status"] == "ok"]
    assert ok.loc[ok["concurrency"] == 10, "startup_ms"].tolist() == pytest.approx([1010.0] * 10)
    assert (pods["status"] == "failed").sum() == 2
    info = json.loads((run.path / "run.json").read_text())
    assert info["provenance"] == "imported from original layout" and info["testbed_kind"] == "fastiov"
    assert (run.path / "logs" / "original" / "time_kata_04301943" / "versions.txt").exists()


def test_import_original_refuses_to_overwrite_and_leaves_nothing_on_bad_input(tmp_path):
    src = make_original(tmp_path / "orig")
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        original.import_original_results(src, dest)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="time_kata"):
        original.import_original_results(empty, tmp_path / "new")
    assert not (tmp_path / "new").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# -- containerd logs --------------------------------------------------------------------------------

RUN_START = ('time="2024-04-30T19:43:00.100000000+08:00" level=info msg="RunPodSandbox for '
             '&PodSandboxMetadata{Name:sandbox-001-001,Uid:u,Namespace:test,Attempt:0,}"')
RUN_END = ('time="2024-04-30T19:43:01.350000000+08:00" level=info msg="RunPodSandbox for '
           '&PodSandboxMetadata{Name:sandbox-001-001,Uid:u,Namespace:test,Attempt:0,} returns sandbox id '
           '\\"' + "ab" * 32 + '\\""')


def test_containerd_parser_pairs_run_pod_sandbox_start_and_end():
    df, rep = containerd_log.parse_containerd_lines([RUN_START, 'time="2024-04-30T19:43:00.2+08:00" level=info msg="other"', RUN_END])
    assert rep.ok and len(df) == 3
    spans = containerd_log.run_pod_sandbox_spans(df)
    assert len(spans) == 1
    row = spans.iloc[0]
    assert row["outcome"] == "ok" and row["sandbox_id"] == "ab" * 32
    assert row["duration_ms"] == pytest.approx(1250.0)


def test_containerd_parser_unwraps_journald_and_reports_foreign_units():
    lines = [
        "-- Logs begin at Mon 2024-04-29 16:52:09 CST, end at Tue 2024-04-30 19:44:04 CST. --",
        "Apr 30 19:43:00 host1 containerd[80757]: " + RUN_START,
        "Apr 30 19:43:00 host1 kvm[104427]: 147 guests now active",
        "Apr 30 19:43:01 host1 containerd[80757]: " + RUN_END,
        "Apr 30 19:43:01 host1 containerd[80757]: time=\"2024-04-30T19:43:01+08:00\" level=info msg=\"trunc",
        "Apr 30 19:43:01 host1 containerd[80757]: time=\"not-a-time\" level=info msg=\"x\"",
    ]
    df, rep = containerd_log.parse_containerd_lines(lines)
    assert len(df) == 2 and (df["pid"] == 80757).all()
    by_line = {n: r for _, n, r in rep.skipped}
    assert "kvm" in by_line[3] and "truncated" in by_line[5] and "RFC3339" in by_line[6]
    assert containerd_log.run_pod_sandbox_spans(df)["duration_ms"].iloc[0] == pytest.approx(1250.0)


@settings(max_examples=80, deadline=None)
@given(garbage=st.lists(st.text(max_size=150), max_size=15))
def test_containerd_parser_is_never_fatal(garbage):
    lines = [g.replace("\n", " ") for g in garbage] + [RUN_START]
    df, rep = containerd_log.parse_containerd_lines(lines)
    assert len(df) >= 1 and len(df) == rep.records
    assert rep.records + len(rep.skipped) <= len(lines)


@pytest.mark.skipif(not JOURNAL.exists(), reason="upstream fixtures not present")
def test_containerd_parser_reads_the_real_journald_dump():
    df, rep = containerd_log.parse_containerd_log(JOURNAL)
    assert rep.lines_read == sum(1 for _ in open(JOURNAL, errors="replace"))
    assert len(df) > 500 and (df["unit"] == "containerd").all()
    failed = df[df["event"] == "run_failed"]
    assert len(failed) == 5 and failed["pod_name"].str.match(r"sandbox-\d{3}-001").all()
    assert failed["sandbox_id"].str.len().eq(64).all()
    assert any("kata" in r for _, _, r in rep.skipped)
    spans = containerd_log.run_pod_sandbox_spans(df)
    assert (spans["outcome"] == "failed").all() and len(spans) == 5


@settings(max_examples=40, deadline=None)
@given(results=st.lists(st.tuples(st.integers(1_600_000_000_000, 1_900_000_000_000), st.integers(0, 600_000),
                                  st.integers(0, 1000)), min_size=1, max_size=6),
       junk=st.lists(st.text(max_size=60).map(lambda t: t.replace("\n", " ").replace("\r", " ")), max_size=4))
def test_original_layout_keeps_good_lines_and_reports_the_rest(results, junk):
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "time_kata_01020304" / f"con_{len(results):03d}"
        d.mkdir(parents=True)
        for i, (start, lat, extra) in enumerate(results):
            d.joinpath(f"_pod_{i:03d}_001.txt").write_text(f"sb{i} {start} {start + lat + extra} {lat}\n")
        d.joinpath("_pod_900_001.txt").write_text("\n".join(junk) + "\n")
        df, rep, _ = original.parse_original_layout(Path(tmp))
    good = df[~df["file"].str.contains("_pod_900")]
    assert good["latency_ms"].tolist() == [float(lat) for _, lat, _ in results]
    junk_rows = df[df["file"].str.contains("_pod_900")]
    assert len(junk_rows) >= 1  # every junk line was either a valid result or reported
    nonblank = sum(1 for j in junk if j.strip())
    assert junk_rows["latency_ms"].notna().sum() + sum(1 for s, n, _ in rep.skipped if n > 0) == nonblank


@settings(max_examples=40, deadline=None)
@given(junk=st.lists(st.text(max_size=80).map(lambda t: t.replace("\n", " ").replace("\r", " ")), max_size=6))
def test_pods_reader_is_never_fatal(junk):
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        run = write_run(Path(tmp) / "r", variants={"none": 10.0}, concurrency=(2,), repeats=1)
        with open(run / "pods.jsonl", "a") as fh:
            fh.write("\n".join(junk) + ("\n" if junk else ""))
        df, rep = read_pods(run)
    nonblank = sum(1 for j in junk if j.strip())
    assert len(df) == 2  # random text is never a valid pod record
    assert len(rep.skipped) == nonblank
