"""Properties of daemon_json's merge (hypothesis): nothing of the user's is ever lost."""

from __future__ import annotations

import json
import os

from conftest import module_utils
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

dj = module_utils("daemon_json")

OURS = {"runtimes", "default-runtime", "features", "node-generic-resources"}
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
foreign = st.dictionaries(st.text(max_size=12).filter(lambda k: k not in OURS), values, max_size=8)
indent = st.sampled_from([None, 2, 4, "\t"])


def plain(text: str):
    return json.loads(text)


@given(foreign, indent, st.booleans())
@settings(max_examples=300, deadline=None)
def test_merge_keeps_every_foreign_key_value_and_order(doc, ind, ascii_only):
    text = json.dumps(doc, indent=ind, ensure_ascii=ascii_only)
    merged = dj.merge(dj.parse(text.encode("utf-8")), dj.Options(cdi=True, generic_resources=["GPU-1"]))
    out = dj.dumps(merged.doc, like=text)
    after = plain(out)
    assert [k for k in after if k not in OURS] == list(doc)
    for key, value in doc.items():
        assert after[key] == value
    # the source text of every number and string survives too
    assert dj.same({k: v for k, v in dj.parse(out.encode()).items() if k not in OURS}, dj.parse(text.encode()))
    # merging again is byte-identical
    again = dj.merge(dj.parse(out.encode()), dj.Options(cdi=True, generic_resources=["GPU-1"]), merged.record)
    assert dj.same(again.doc, dj.parse(out.encode()))


@given(foreign)
@settings(max_examples=200, deadline=None)
def test_absent_after_present_gives_the_original_document_back(doc):
    text = json.dumps(doc, indent=2)
    original = dj.parse(text.encode())
    present = dj.merge(original, dj.Options(cdi=True, generic_resources=["GPU-1"]))
    absent = dj.merge(present.doc, dj.Options(state="absent"), present.record)
    assert dj.same(absent.doc, original)
    assert absent.record == {}


@given(st.binary(max_size=200) | foreign.map(lambda d: json.dumps(d).encode()))
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_random_bytes_never_lose_the_original(tmp_path, data):
    d = tmp_path / str(abs(hash(data)))
    d.mkdir(exist_ok=True)
    for f in os.listdir(d):
        os.unlink(d / f)
    target = d / "daemon.json"
    target.write_bytes(data)
    try:
        result = dj.configure(str(target), dj.Options(), state_dir=str(tmp_path / "state"), validate_mode="never")
    except dj.DaemonJsonError as exc:
        assert exc.code == 4
        assert target.read_bytes() == data
        assert os.listdir(d) == ["daemon.json"]
        return
    # accepted: it was a JSON object (or empty), and every key of it is still there
    try:
        original = json.loads(data.decode("utf-8")) if data.strip() else {}
    except ValueError:  # Python's json is laxer than Go's (NaN), never stricter
        raise AssertionError(f"accepted what Python's json refuses: {data!r}") from None
    after = json.loads(target.read_bytes())
    for key, value in original.items():
        assert key in after
        if key not in OURS:
            assert after[key] == value
    if result["changed"] and data:
        assert open(result["backup_file"], "rb").read() == data
