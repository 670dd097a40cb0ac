import subprocess
import sys

from click.testing import CliRunner

from ganrt.cli import COMMANDS, cli


def test_help_lists_every_stage_command():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in COMMANDS:
        assert name in result.output


def test_help_does_not_import_torch_or_backends():
    code = ("import sys; from ganrt.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'onnxruntime', 'openvino', 'tensorrt', 'onnx') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out


def test_every_registered_command_resolves_and_has_help():
    runner = CliRunner()
    for name in COMMANDS:
        result = runner.invoke(cli, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
        assert "--help" in result.output


def test_ganrt_error_is_one_line_and_exit_2(monkeypatch):
    import click

    from ganrt.errors import DataError

    @cli.command("boom-test")
    def boom():
        raise DataError("the dataset folder x is empty")

    try:
        result = CliRunner().invoke(cli, ["boom-test"])
    finally:
        cli.commands.pop("boom-test", None)
    assert result.exit_code == 2
    assert result.output.strip() == "ganrt: error: the dataset folder x is empty"
    assert isinstance(click, object)
