import json
import subprocess
import sys

import pytest

from mobilenet import count_cost, create_model
from mobilenet.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list(capsys):
    code, out, _ = run(capsys, "list", "mobilenet_v1*")
    assert code == 0 and out.split() == ["mobilenet_v1", "mobilenet_v1_conv", "mobilenet_v1_shallow"]


def test_summary_table(capsys):
    code, out, _ = run(capsys, "summary", "mobilenet_v1", "--alpha", "0.75", "--resolution", "160")
    expected = count_cost(create_model("mobilenet_v1", alpha=0.75, resolution=160))
    assert code == 0
    assert "80x80x24" in out and "5x5x768" in out  # output shapes at 160: 80 ... 5
    assert f"{expected.mult_adds:,}" in out and f"{expected.params:,}" in out


def test_summary_json(capsys):
    code, out, _ = run(capsys, "summary", "mobilenet_v2", "--rho", "0.5", "--num-classes", "10", "--json")
    data = json.loads(out)
    assert code == 0
    assert {"model", "alpha", "resolution", "mult_adds", "params", "params_no_bn", "layers"} <= set(data)
    assert data["resolution"] == 112 and data["layers"][-1]["out_chs"] == 10
    assert data["mult_adds"] == count_cost(create_model("mobilenet_v2", rho=0.5, num_classes=10)).mult_adds


def test_grid_marks_paper_numbers(capsys):
    code, out, _ = run(capsys, "grid")
    assert code == 0
    assert out.count("✓") == 8 and "✗" not in out  # every configuration the paper prints agrees


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["summary", "mobilenet_v5"], "unknown model 'mobilenet_v5'"),
        (["summary", "mobilenet_v1", "--alpha", "0"], "--alpha"),
        (["summary", "mobilenet_v1", "--alpha", "abc"], "--alpha"),
        (["summary", "mobilenet_v1", "--resolution", "-3"], "--resolution"),
        (["summary", "mobilenet_v1", "--rho", "0.5", "--resolution", "100"], "not allowed with"),
    ],
)
def test_user_errors_are_one_line(capsys, argv, fragment):
    with pytest.raises(SystemExit) as exc:
        code = main(argv)
        raise SystemExit(code)
    _, err = capsys.readouterr()
    assert exc.value.code == 2
    assert fragment in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_console_script_runs():
    proc = subprocess.run([sys.executable, "-m", "mobilenet", "summary", "mobilenet_v1", "--alpha", "0"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
