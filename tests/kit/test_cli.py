"""The `kit` command line through click's CliRunner: help, exit codes, --json shape, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from kit import cli as kit_cli
from kit.cli import cli
from kit.diagram import render_all, write_all
from tests.conftest import ROOT


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), prog_name="kit")


def assert_one_line_error(result: Result, *fragments: str, exit_code: int = 1) -> None:
    assert result.exit_code == exit_code, result.output
    assert "Traceback" not in result.output
    error_lines = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(error_lines) == 1, result.output
    for fragment in fragments:
        assert fragment in error_lines[0]


def fake_assembly(folder: Path, templates: dict[str, Any]) -> Path:
    """A minimal cloud assembly: manifest.json plus one template file per stack."""
    artifacts = {}
    for stack_id, template in templates.items():
        (folder / f"{stack_id}.template.json").write_text(json.dumps(template))
        artifacts[stack_id] = {
            "type": "aws:cloudformation:stack",
            "properties": {"templateFile": f"{stack_id}.template.json"},
        }
    (folder / "manifest.json").write_text(json.dumps({"artifacts": artifacts}))
    return folder


@pytest.mark.parametrize("args", [["--help"], ["cost", "--help"], ["diagram", "--help"], ["-h"]])
def test_help_is_available_everywhere(args: list[str]) -> None:
    result = run(*args)
    assert result.exit_code == 0
    assert "Usage: kit" in result.output


def test_top_level_help_lists_the_offline_commands() -> None:
    output = run("--help").output
    assert "kit cost" in output and "kit diagram" in output


def test_cost_json_has_one_entry_per_stack_with_idle_and_per_use(sandbox: Any) -> None:
    result = run("cost", "--assembly", str(sandbox.assembly_dir), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert (report["region"], report["currency"], report["stage"]) == ("us-east-1", "USD", None)
    by_stack = {stack["stack"]: stack for stack in report["stacks"]}
    assert list(by_stack) == sorted(sandbox.templates)
    assert by_stack["GenAiKit-1-Prompt"]["idle_usd_month"] == 0.6
    assert by_stack["GenAiKit-4-Pretrain-Cluster"]["idle_usd_month"] == 87.1
    assert by_stack["GenAiKit-4-Pretrain-Jobs"]["idle_items"] == []
    assert report["total_idle_usd_month"] == round(sum(s["idle_usd_month"] for s in report["stacks"]), 2)
    [alarms] = by_stack["GenAiKit-1-Prompt"]["idle_items"]
    assert alarms == {
        "item": "CloudWatch alarms",
        "quantity": 6,
        "unit_usd": 0.1,
        "unit": "alarm-month",
        "monthly_usd": 0.6,
        "later_monthly_usd": None,
        "price_id": "cloudwatch.alarm",
        "approximate": False,
    }
    # Level 3's rotated KMS key: $1/month now, $3/month from its second yearly rotation
    level3 = by_stack["GenAiKit-3-FineTune"]
    assert (level3["idle_usd_month"], level3["idle_usd_month_later"]) == (1.1, 3.1)
    assert {"item", "usd", "unit", "price_id", "approximate"} == set(by_stack["GenAiKit-1-Prompt"]["per_use"][0])


def test_cost_for_one_stack_and_region(sandbox: Any) -> None:
    args = ["cost", "--assembly", str(sandbox.assembly_dir), "--stack", "GenAiKit-2-Rag", "--region", "us-west-2"]
    report = json.loads(run(*args, "--json").output)
    assert report["region"] == "us-west-2"
    assert [stack["stack"] for stack in report["stacks"]] == ["GenAiKit-2-Rag"]


def test_cost_table_shows_each_stack_and_its_idle_figure(sandbox: Any) -> None:
    result = run("cost", "--assembly", str(sandbox.assembly_dir))
    assert result.exit_code == 0, result.output
    for stack_id in sandbox.templates:
        assert stack_id in result.output
    assert "$87.10" in result.output and "NAT gateways" in result.output
    assert "kit/prices.json" in result.output


def test_cost_table_names_what_a_kept_imported_model_bills_while_idle(sandbox: Any) -> None:
    result = run("cost", "--assembly", str(sandbox.assembly_dir), "--stack", "GenAiKit-3-FineTune-SageMaker")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())  # the table wraps cells
    assert "CloudWatch alarms" in text  # the teardown dead-letter alarm, the stack's only idle cost
    assert "per kept model:" in text and "storage" in text.split("per kept model:", 1)[1]


def test_cost_synthesizes_with_the_stage_and_region_given(monkeypatch: pytest.MonkeyPatch, sandbox: Any) -> None:
    seen: dict[str, Any] = {}

    def fake_synthesize(context: dict[str, Any], root: Path) -> dict[str, Any]:
        seen.update(context=context, root=root)
        return sandbox.templates

    monkeypatch.setattr(kit_cli, "synthesize", fake_synthesize)
    result = run("cost", "--stage", "prod", "--region", "us-west-2", "-c", "hp_nat_gateways=2", "--json")
    assert result.exit_code == 0, result.output
    assert (seen["context"]["stage"], seen["context"]["region"]) == ("prod", "us-west-2")
    assert seen["context"]["hp_nat_gateways"] == "2"  # passed as a string, like `cdk -c`
    assert seen["context"]["rag_vector_store"] == "s3vectors"  # the rest is cdk.json's
    assert seen["root"] == ROOT
    report = json.loads(result.output)
    assert (report["stage"], report["region"]) == ("prod", "us-west-2")


def test_an_unknown_stack_is_one_line_listing_the_known_ones(sandbox: Any) -> None:
    result = run("cost", "--assembly", str(sandbox.assembly_dir), "--stack", "GenAiKit-9")
    assert_one_line_error(result, "no stack 'GenAiKit-9'", "GenAiKit-1-Prompt", exit_code=2)  # a usage error


def test_an_invented_resource_type_fails_the_cost_command(tmp_path: Path) -> None:
    template = {"Resources": {"Ledger": {"Type": "AWS::QLDB::Ledger"}, "Alarm": {"Type": "AWS::CloudWatch::Alarm"}}}
    result = run("cost", "--assembly", str(fake_assembly(tmp_path, {"GenAiKit-9-Ledger": template})))
    assert_one_line_error(result, "GenAiKit-9-Ledger: AWS::QLDB::Ledger (Ledger)", "FREE_WHILE_IDLE")


@pytest.mark.parametrize("extra", [["--stage", "prod"], ["-c", "stage=prod"]])
def test_synth_options_cannot_be_applied_to_an_existing_assembly(sandbox: Any, extra: list[str]) -> None:
    result = run("cost", "--assembly", str(sandbox.assembly_dir), *extra)
    assert result.exit_code == 2
    assert "cannot change an existing --assembly" in result.output


def test_a_context_value_without_equals_is_a_usage_error() -> None:
    result = run("cost", "-c", "stage")
    assert result.exit_code == 2
    assert "expected KEY=VALUE, got 'stage'" in result.output


def test_a_folder_that_is_not_an_assembly_is_one_line(tmp_path: Path) -> None:
    assert_one_line_error(run("cost", "--assembly", str(tmp_path)), "not a cloud assembly")


@pytest.mark.parametrize(
    ("manifest", "fragment"),
    [
        ([], "manifest.json is not what `cdk synth` writes"),
        ({"artifacts": {"S": {"type": "aws:cloudformation:stack"}}}, "stack S names no templateFile"),
    ],
)
def test_a_manifest_of_another_shape_is_one_line(tmp_path: Path, manifest: Any, fragment: str) -> None:
    """Before: "unexpected AttributeError" / "unexpected KeyError: 'templateFile'"."""
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert_one_line_error(run("cost", "--assembly", str(tmp_path)), fragment, "run `make synth` again")


def test_a_template_that_is_not_an_object_is_one_line(tmp_path: Path) -> None:
    fake_assembly(tmp_path, {"GenAiKit-1-Prompt": {}})
    (tmp_path / "GenAiKit-1-Prompt.template.json").write_text("[1, 2]")
    assert_one_line_error(run("cost", "--assembly", str(tmp_path)), "GenAiKit-1-Prompt.template.json is not what")


def test_a_reader_that_quits_early_is_no_failure(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Before: `kit cost --json | head` printed "unexpected BrokenPipeError" and exited 1."""

    def closed_pipe(_: Path) -> dict[str, Any]:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.delenv("KIT_DEBUG", raising=False)
    monkeypatch.setattr(kit_cli, "read_assembly", closed_pipe)
    result = run("cost", "--assembly", str(tmp_path))
    assert (result.exit_code, result.output) == (141, "")


def test_a_reader_that_quits_early_ends_the_real_process_quietly(sandbox: Any) -> None:
    """The process itself: its stdout closed by the reader before the report is written."""
    command = [sys.executable, "-m", "kit", "cost", "--assembly", str(sandbox.assembly_dir), "--json"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # before the command writes anything: its first write meets a closed pipe
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == 141, stderr
    assert "unexpected" not in stderr and "Traceback" not in stderr, stderr


@pytest.mark.parametrize("where", ["file", "unreadable"])
def test_diagram_pages_that_cannot_be_written_or_read_are_one_line(sandbox: Any, tmp_path: Path, where: str) -> None:
    """Before: "unexpected NotADirectoryError" / "unexpected UnicodeDecodeError"."""
    if where == "file":  # --out below a file
        (tmp_path / "a-file").write_text("")
        out, fragment = tmp_path / "a-file" / "diagrams", "pass --out a writable folder"
    else:  # a page there that is not UTF-8
        (tmp_path / "GenAiKit-1-Prompt.md").write_bytes(b"\xff\xfe")
        out, fragment = tmp_path, "cannot read"
    result = run("diagram", "--assembly", str(sandbox.assembly_dir), "--out", str(out))
    assert_one_line_error(result, fragment)
    assert "unexpected" not in result.output


def test_an_unexpected_failure_is_one_line_without_traceback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def broken(_: Path) -> dict[str, Any]:
        raise RuntimeError("template reader broke\nsecond line")

    monkeypatch.delenv("KIT_DEBUG", raising=False)
    monkeypatch.setattr(kit_cli, "read_assembly", broken)
    result = run("cost", "--assembly", str(tmp_path))
    assert_one_line_error(result, "unexpected RuntimeError: template reader broke second line", "KIT_DEBUG=1")


def test_diagram_writes_then_checks_and_names_a_stale_page(sandbox: Any, tmp_path: Path) -> None:
    assembly = str(sandbox.assembly_dir)
    written = run("diagram", "--assembly", assembly, "--out", str(tmp_path))
    assert written.exit_code == 0, written.output
    assert sorted(path.name for path in tmp_path.glob("*.md")) == sorted(f"{s}.md" for s in sandbox.templates)
    assert run("diagram", "--assembly", assembly, "--out", str(tmp_path), "--check").exit_code == 0
    (tmp_path / "GenAiKit-3-FineTune.md").write_text("stale\n")
    assert_one_line_error(
        run("diagram", "--assembly", assembly, "--out", str(tmp_path), "--check"),
        "GenAiKit-3-FineTune.md",
        "run `kit diagram` and commit",  # what fixes it
    )


def test_diagram_check_passes_on_the_committed_pages(sandbox: Any) -> None:
    result = run("diagram", "--assembly", str(sandbox.assembly_dir), "--check")
    assert result.exit_code == 0, result.output


def test_diagram_check_for_one_stack_ignores_the_others(sandbox: Any, tmp_path: Path) -> None:
    write_all(render_all(sandbox.templates), tmp_path)
    (tmp_path / "GenAiKit-1-Prompt.md").write_text("stale\n")
    args = ["diagram", "--assembly", str(sandbox.assembly_dir), "--out", str(tmp_path), "--check"]
    assert run(*args, "--stack", "GenAiKit-2-Rag").exit_code == 0
    assert run(*args, "--stack", "GenAiKit-1-Prompt").exit_code == 1


def test_python_dash_m_kit_runs_the_same_command_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kit", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "kit cost" in result.stdout


def test_ctrl_c_exits_130_saying_what_keeps_running(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: click's "Aborted!" and exit 1, also in the middle of an upload or a start (a run may have started)."""

    def interrupted(*_: Any, **__: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(kit_cli, "_templates", interrupted)
    result = run("cost")
    assert result.exit_code == 130, result.output
    assert "Interrupted: what was already uploaded or started keeps running" in result.output
    assert "Aborted!" not in result.output and "Traceback" not in result.output
