"""``python -m pipeline target RUN --compiled DIR``: an Edge TPU compile made elsewhere (the stand-in compiler's files,
Coral's log format) folded into a fake run's target stage, read back by the report and the bundle; and every bad
input refused in one line before anything in the run changes."""

from __future__ import annotations

import json
import re
import tarfile

import flatbuffers
import numpy as np
import pytest
from report_fakes import write_run
from test_edgetpu_compiler import FULL_LOG_FILE, PARTIAL

import pipeline.device.bundle as bundle_mod
from pipeline.__main__ import main
from pipeline.artifacts import Manifest, hash_outputs, verify_outputs
from pipeline.device.bundle import make_bundle


def tflite_bytes(op: str, shape_in=(1, 8, 8, 1), shape_out=(1, 10), more_ops: tuple[str, ...] = ()) -> bytes:
    """A TFLite flatbuffer (uint8 in/out) of ``op`` then ``more_ops`` in a chain: a builtin op by name, else a custom op
    such as edgetpu-custom-op."""
    from ai_edge_litert import schema_py_generated as s

    ops = (op, *more_ops)
    codes = []
    for name in ops:
        code = s.OperatorCodeT()
        code.builtinCode = code.deprecatedBuiltinCode = getattr(s.BuiltinOperator, name, s.BuiltinOperator.CUSTOM)
        if code.builtinCode == s.BuiltinOperator.CUSTOM:
            code.customCode = name
        codes.append(code)
    tensors = []
    shapes = [("input", shape_in), *((f"t{i}", shape_in) for i in range(1, len(ops))), ("logits", shape_out)]
    for name, shape in shapes:
        t = s.TensorT()
        t.name, t.shape, t.type, t.buffer = name, list(shape), s.TensorType.UINT8, 0
        tensors.append(t)
    operators = []
    for i in range(len(ops)):
        operator = s.OperatorT()
        operator.opcodeIndex, operator.inputs, operator.outputs = i, [i], [i + 1]
        operators.append(operator)
    sg = s.SubGraphT()
    sg.tensors, sg.inputs, sg.outputs, sg.operators = tensors, [0], [len(ops)], operators
    model = s.ModelT()
    model.version, model.operatorCodes, model.buffers, model.subgraphs = 3, codes, [s.BufferT()], [sg]
    b = flatbuffers.Builder(0)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


@pytest.fixture
def run(tmp_path):
    folder = write_run(tmp_path / "run", config={"name": "run", "target": {"name": "edge_tpu"}})
    export = folder / "05_export"
    (export / "student_int8.tflite").write_bytes(tflite_bytes("FULLY_CONNECTED"))
    (export / "student_int8.tflite.json").write_text(json.dumps({"format": "tflite_int8", "input": {"dtype": "uint8"}}))
    (export / "artifacts.json").write_text(json.dumps({"tflite_int8": "student_int8.tflite"}))
    target = folder / "06_target"
    (target / "check.json").write_text("{}")
    m = Manifest.read(target)
    m.outputs = hash_outputs(target)
    m.write(target)
    return folder


def compiled_dir(path, *, stem="student_int8", model: bytes | None = None, log: str = FULL_LOG_FILE, stdout: str | None = PARTIAL):
    """What ``edgetpu_compiler -s -o DIR`` leaves (the stand-in compiler's files), stdout saved beside them."""
    path.mkdir(parents=True, exist_ok=True)
    (path / f"{stem}_edgetpu.tflite").write_bytes(tflite_bytes("edgetpu-custom-op") if model is None else model)
    (path / f"{stem}_edgetpu.log").write_text(log)
    if stdout is not None:
        (path / "edgetpu_compiler.log").write_text(stdout)
    return path


def _target(args, capsys):
    rc = main(["target", *map(str, args)])
    return rc, capsys.readouterr()


def test_import_records_the_split_for_the_report_and_the_bundle(run, tmp_path, capsys, monkeypatch):
    src = compiled_dir(tmp_path / "from_the_amd64_box")
    rc, out = _target([run, "--compiled", src], capsys)
    assert rc == 0, out.err
    assert "264/267 ops on the Edge TPU, 1 subgraph(s), 4.21 MiB on-chip, 0.00 MiB off-chip" in out.out

    target = run / "06_target"
    m = Manifest.read(target)
    assert m.metrics["compiled"] is True and m.metrics["compiler"] == "compiled"
    r = m.metrics["compiler_result"]
    assert (r["ops_total"], r["ops_mapped"], r["ops_cpu"]) == (267, 264, 3)
    assert r["on_chip_bytes_used"] == round(4.21 * 2**20) and r["off_chip_bytes"] == 0
    assert [o["op"] for o in r["operators"] if not o["mapped"]] == ["CUSTOM", "LEAKY_RELU"]
    assert m.metrics["compiler_agrees"] is False  # the fake static check said 10/10
    assert str(src.resolve()) in m.metrics["compiler_source"]
    assert {"student_int8_edgetpu.tflite", "student_int8_edgetpu.log", "edgetpu_compiler.log"} <= set(m.outputs)
    assert verify_outputs(target, m)  # the manifest hashes what is there: the run loop accepts the stage
    assert (target / "student_int8_edgetpu.tflite").read_bytes() == (src / "student_int8_edgetpu.tflite").read_bytes()
    assert sorted(p.name for p in src.iterdir()) == ["edgetpu_compiler.log", "student_int8_edgetpu.log",
                                                     "student_int8_edgetpu.tflite"]  # the user's folder is only read

    assert main(["report", str(run)]) == 0
    report = json.loads((run / "report.json").read_text())
    c = report["target"]["compiler"]
    assert c["ran"] and c["compiled"] and (c["ops_total"], c["ops_mapped"], c["subgraphs"]) == (267, 264, 1)
    sentence = ("edgetpu_compiler 16.0.384591198 compiled it: 264/267 ops on the Edge TPU, 3 on the CPU, 1 subgraph(s), "
                "4.21 MiB of parameters on-chip, 0.00 MiB off-chip")
    assert report["headline"]["compiler"].startswith(sentence)
    assert next(ch for ch in report["checks"] if ch["kind"] == "compiler")["status"] == "PASS"
    assert sentence in (run / "report.md").read_text()

    x, y = np.zeros((4, 1, 8, 8), np.float32), np.arange(4)
    monkeypatch.setattr(bundle_mod, "test_sample", lambda run_dir, n: (x[:n], y[:n]))
    monkeypatch.setattr(bundle_mod, "host_predictions", lambda path, xs: np.zeros(len(xs), np.int64))
    make_bundle(run, "edge_tpu", tmp_path / "coral.tar")
    with tarfile.open(tmp_path / "coral.tar") as tar:
        manifest = json.load(tar.extractfile("bundle.json"))
        assert tar.extractfile("models/student_int8_edgetpu.tflite").read() == (src / "student_int8_edgetpu.tflite").read_bytes()
    assert manifest["deploy_artifact"] == "tflite_edgetpu"


def test_operation_log_alone_gives_the_op_split(run, tmp_path, capsys):
    """Without the saved stdout only Coral's .log comes back: its table is the split, the file counts the subgraphs."""
    partial_table = FULL_LOG_FILE + "    LEAKY_RELU                     2          Operation not supported\n"
    rc, out = _target([run, "--compiled", compiled_dir(tmp_path / "c", log=partial_table, stdout=None)], capsys)
    assert rc == 0, out.err
    r = Manifest.read(run / "06_target").metrics["compiler_result"]
    assert (r["ops_total"], r["ops_mapped"], r["ops_cpu"], r["subgraphs"]) == (14, 12, 2, 1)
    assert r["version"] == "16.0.384591198" and r["log"] == "student_int8_edgetpu.log"


def test_a_compile_written_into_the_target_folder_is_recorded_in_place(run, capsys):
    """docker/compile writes into RUN/06_target: importing that folder records it without copying onto itself."""
    compiled_dir(run / "06_target", stdout=None)
    rc, out = _target([run, "--compiled", run / "06_target"], capsys)
    assert rc == 0, out.err
    assert "student_int8_edgetpu.tflite" in Manifest.read(run / "06_target").outputs


@pytest.mark.parametrize("case, expected", [
    ("missing folder", r"--compiled \S+/nowhere: no such folder; compile \S+student_int8.tflite with: edgetpu_compiler"),
    ("no compiled model", r"/c: no \*_edgetpu.tflite in it; compile "),
    ("another model's compile", r"/c/other_edgetpu.tflite: compiled from other.tflite, not this run's student_int8.tflite"),
    ("log of another model", r"/c/student_int8_edgetpu.log: a log for mobilenet_int8.tflite, not this run's student_int8.tflite"),
    ("stdout of another model", r"/c/edgetpu_compiler.log: a log for other.tflite, not this run's student_int8.tflite"),
    ("no operation log", r"/c/student_int8_edgetpu.log: missing"),
    ("not a log", r"/c/student_int8_edgetpu.log: names no input model"),
    ("not a TFLite file", r"/c/student_int8_edgetpu.tflite: not a TFLite flatbuffer \(edgetpu_compiler writes one"),
    ("not compiled", r"/c/student_int8_edgetpu.tflite: a TFLite model without an edgetpu-custom-op"),
    ("other I/O", r"/c/student_int8_edgetpu.tflite: inputs 1×224×224×3 uint8; outputs 1×10 uint8, but student_int8.tflite has "
                 r"inputs 1×8×8×1 uint8; outputs 1×10 uint8: compiled from another model"),
])
def test_bad_inputs_are_one_line_and_change_nothing(run, tmp_path, capsys, case, expected):
    c = tmp_path / "c"
    if case == "missing folder":
        c = tmp_path / "nowhere"
    elif case == "no compiled model":
        c.mkdir()
        (c / "student_int8.tflite").write_bytes(tflite_bytes("FULLY_CONNECTED"))
    elif case == "another model's compile":
        compiled_dir(c, stem="other")
    elif case == "log of another model":
        compiled_dir(c, log=FULL_LOG_FILE.replace("student_int8", "mobilenet_int8"), stdout=None)
    elif case == "stdout of another model":
        compiled_dir(c, stdout=PARTIAL.replace("Input model: student_int8", "Input model: /tmp/x/other"))
    elif case == "no operation log":
        compiled_dir(c).joinpath("student_int8_edgetpu.log").unlink()
    elif case == "not a log":
        compiled_dir(c, log="hello\n")
    elif case == "not a TFLite file":
        compiled_dir(c, model=b"<html>404 Not Found</html>" * 10)
    elif case == "not compiled":
        compiled_dir(c, model=tflite_bytes("FULLY_CONNECTED"))
    elif case == "other I/O":
        compiled_dir(c, model=tflite_bytes("edgetpu-custom-op", shape_in=(1, 224, 224, 3)))
    before = {p.name: p.read_bytes() for p in (run / "06_target").iterdir()}
    rc, out = _target([run, "--compiled", c], capsys)
    assert rc == 2 and out.out == ""
    assert out.err.count("\n") == 1 and out.err.startswith("error: ") and "Traceback" not in out.err, out.err
    assert re.search(expected, out.err), out.err
    assert {p.name: p.read_bytes() for p in (run / "06_target").iterdir()} == before


def test_run_mistakes(tmp_path, run, capsys):
    rc, out = _target([tmp_path / "nope", "--compiled", tmp_path], capsys)
    assert rc == 2 and "nope: no such run folder" in out.err
    (run / "06_target" / "manifest.json").unlink()
    rc, out = _target([run, "--compiled", compiled_dir(tmp_path / "c")], capsys)
    assert rc == 2 and "06_target: no finished target stage; run it first" in out.err
    (run / "config.json").write_text(json.dumps({"target": {"name": "rpi4"}}))
    Manifest(stage="target", cache_key="k", inputs={}).write(run / "06_target")
    rc, out = _target([run, "--compiled", tmp_path / "c"], capsys)
    assert rc == 2 and "its target rpi4 has no vendor compiler whose output --compiled imports (targets with one: edge_tpu)" in out.err
