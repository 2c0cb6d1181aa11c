"""The documentation: idle costs are the figures `kit cost` computes, and every AWS CLI and kit command shown exists."""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kit.costs import HYPERPOD_EBS, analyze_stack, load_prices
from tests.conftest import ROOT

DOCS_INDEX = ROOT / "docs" / "README.md"
README = ROOT / "README.md"


def _idle(synth: Any, stack_id: str) -> float:
    return analyze_stack(stack_id, synth.templates[stack_id], load_prices("us-east-1")).idle_usd


def _row(text: str, label: str) -> str:
    [row] = [line for line in text.splitlines() if line.startswith("|") and label in line]
    return row


def _amounts(row: str) -> list[float]:
    return [float(a.replace(",", "")) for a in re.findall(r"\$([0-9][0-9,]*(?:\.[0-9]+)?)", row)]


def test_docs_index_idle_costs_match_kit_cost(sandbox: Any, sandbox_oss: Any) -> None:
    text = DOCS_INDEX.read_text()
    assert round(_idle(sandbox, "GenAiKit-1-Prompt"), 2) in _amounts(_row(text, "1. Prompt engineering"))
    level2 = _amounts(_row(text, "2. RAG"))
    assert round(_idle(sandbox, "GenAiKit-2-Rag"), 2) in level2
    assert round(_idle(sandbox_oss, "GenAiKit-2-Rag"), 2) in level2
    assert round(_idle(sandbox, "GenAiKit-3-FineTune"), 2) in _amounts(_row(text, "3. Fine-tuning"))
    assert round(_idle(sandbox, "GenAiKit-3-FineTune-SageMaker"), 2) in _amounts(_row(text, "3. Fine-tuning"))
    level4 = _amounts(_row(text, "4. Pre-training"))
    assert round(_idle(sandbox, "GenAiKit-4-Pretrain-Jobs")) in level4
    assert round(_idle(sandbox, "GenAiKit-4-Pretrain-Cluster")) in level4


def test_readme_spectrum_table_links_every_level_page_and_states_the_same_costs(sandbox: Any, sandbox_oss: Any) -> None:
    text = README.read_text()
    for page in ("level-1-prompt", "level-2-rag", "level-3-finetune", "level-4-pretrain"):
        assert f"(docs/{page}.md)" in text
        assert (ROOT / "docs" / f"{page}.md").is_file()
    assert round(_idle(sandbox, "GenAiKit-1-Prompt"), 2) in _amounts(_row(text, "1. Prompt engineering"))
    assert round(_idle(sandbox, "GenAiKit-3-FineTune"), 2) in _amounts(_row(text, "3. Fine-tuning"))
    assert round(_idle(sandbox, "GenAiKit-4-Pretrain-Cluster")) in _amounts(_row(text, "4. Pre-training"))
    level2 = _amounts(_row(text, "2. RAG"))
    assert round(_idle(sandbox, "GenAiKit-2-Rag"), 2) in level2
    assert round(_idle(sandbox_oss, "GenAiKit-2-Rag"), 2) in level2


def test_readme_level4_idle_table_adds_up_to_kit_cost(sandbox: Any) -> None:
    """The README's Level 4 cost table lists every idle item of the cluster stack (its rows sum to kit cost's
    figure), besides the FSx row, which sandbox_fsx turns on."""
    text = README.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| Cluster: ") and "FSx" not in line]
    assert len(rows) >= 4
    total = sum(sum(_amounts(row)) for row in rows)
    assert round(total, 2) == round(_idle(sandbox, "GenAiKit-4-Pretrain-Cluster"), 2)


def _cluster_totals(synth: Any) -> dict[str, float]:
    """price id -> what the cluster stack's idle items of that price bill per month, as kit cost computes it."""
    stack = "GenAiKit-4-Pretrain-Cluster"
    totals: dict[str, float] = {}
    for item in analyze_stack(stack, synth.templates[stack], load_prices("us-east-1")).idle_items:
        totals[item.price_id] = totals.get(item.price_id, 0.0) + item.monthly_usd
    return totals


def test_the_level4_opt_in_rows_state_what_kit_cost_computes(
    sandbox: Any, sandbox_fsx: Any, prod_extremes: Any
) -> None:
    """Each opt-in that adds idle cost to the cluster has its own row in both Level 4 cost tables, with the figures
    kit cost computes for a variant that turns it on (before, only FSx at 125 MB/s/TiB had one, and a user who chose
    1000 MB/s/TiB and a login node was billed ~$600 a month more than the tables showed)."""
    prices = load_prices("us-east-1")
    base, fsx, extremes = _cluster_totals(sandbox), _cluster_totals(sandbox_fsx), _cluster_totals(prod_extremes)
    storage_gb = fsx["fsx.lustre_persistent2:125"] / prices.entries["fsx.lustre_persistent2:125"].usd
    tiers = [prices.entries[f"fsx.lustre_persistent2:{tier}"].usd * storage_gb for tier in (250, 500, 1000)]
    assert round(extremes["fsx.lustre_persistent2:1000"], 2) == round(tiers[2], 2)  # what the stack bills
    login = "sagemaker.hyperpod:ml.t3.medium"
    expected = {
        "Opt-in: FSx at 250 / 500 / 1000 MB/s/TiB": [round(t) for t in tiers],
        # sandbox_fsx adds the login node (ml.t3.medium, with its volume) to the controller
        "Opt-in: a login node": [fsx[login] - base[login], fsx[HYPERPOD_EBS] - base[HYPERPOD_EBS]],
        # prod_extremes has two NAT gateways, each with its address
        "Opt-in: a second NAT gateway": [extremes["vpc.nat_gateway"] / 2, extremes["vpc.public_ipv4"] / 2],
    }
    for text in (README.read_text(), (ROOT / "docs" / "level-4-pretrain.md").read_text()):
        for label, figures in expected.items():
            assert _amounts(_row(text, label)) == [round(f, 2) for f in figures], label


def test_the_level_pages_and_the_opt_in_figures_state_what_kit_cost_computes(
    sandbox: Any, sandbox_oss: Any, sandbox_fsx: Any, prod_extremes: Any
) -> None:
    """The idle rows of the Level 1 and 2 pages, and the opt-in figures of the summaries (OpenSearch Serverless
    with standby replicas, the cluster with FSx), were stated without a check."""
    rag, cluster = "GenAiKit-2-Rag", "GenAiKit-4-Pretrain-Cluster"
    level1, level2 = (ROOT / "docs" / "level-1-prompt.md").read_text(), (ROOT / "docs" / "level-2-rag.md").read_text()
    assert round(_idle(sandbox, "GenAiKit-1-Prompt"), 2) in _amounts(_row(level1, "| Idle |"))
    assert round(_idle(sandbox, rag), 2) in _amounts(_row(level2, "| Idle, S3 Vectors |"))
    # prod_extremes turns standby replicas on; the sandbox's alarms are the rest of the figure.
    ocus = sum(
        i.monthly_usd
        for i in analyze_stack(rag, prod_extremes.templates[rag], load_prices("us-east-1")).idle_items
        if i.price_id == "opensearch_serverless.ocu"
    )
    alarms = _idle(sandbox, rag)
    standby = round(ocus + alarms, 2)
    for row in (_row(level2, "| Idle, OpenSearch Serverless |"), _row(README.read_text(), "2. RAG")):
        assert [round(_idle(sandbox_oss, rag), 2), standby] == [a for a in _amounts(row) if a > 100], row
    with_fsx = round(_idle(sandbox, cluster) + _cluster_totals(sandbox_fsx)["fsx.lustre_persistent2:125"])
    for text in (README.read_text(), DOCS_INDEX.read_text()):
        assert with_fsx in _amounts(_row(text, "4. Pre-training"))


def test_every_stack_has_a_committed_diagram_linked_from_its_page(sandbox: Any) -> None:
    pages = " ".join(p.read_text() for p in (ROOT / "docs").glob("level-*.md"))
    for stack_id in sandbox.templates:
        assert (ROOT / "docs" / "diagrams" / f"{stack_id}.md").is_file()
        assert f"diagrams/{stack_id}.md" in pages


def test_level3_idle_cost_says_the_rotated_key_grows(sandbox: Any) -> None:
    # KMS bills each of a key's first two rotations $1/month more (https://aws.amazon.com/kms/pricing/): where a
    # rotated key's $1.00 idle figure is stated, so is its growth.
    template = sandbox.templates["GenAiKit-3-FineTune"]
    keys = [r for r in template["Resources"].values() if r["Type"] == "AWS::KMS::Key"]
    assert keys and all(key["Properties"].get("EnableKeyRotation") is True for key in keys)
    page = (ROOT / "docs" / "level-3-finetune.md").read_text()
    rows = [
        _row(README.read_text(), "3. Fine-tuning"),
        _row(DOCS_INDEX.read_text(), "3. Fine-tuning"),
        _row(page, "| Idle |"),
    ]
    rotated = round(_idle(sandbox, "GenAiKit-3-FineTune") + 2.0, 2)  # two rotations, $1/month each
    for row in rows:
        assert "rotation" in row and rotated in _amounts(row), row


def test_the_sagemaker_runs_smoke_window_is_five_cmu_minutes_at_the_listed_price() -> None:
    # An imported model bills inference per CMU-minute in 5-minute windows from its first successful call
    # (https://docs.aws.amazon.com/bedrock/latest/userguide/import-model-calculate-cost.html): a run's one smoke
    # invocation bills one window, and every page that prices it states that window at the price table's rate.
    window = round(5 * load_prices("us-east-1").entries["bedrock.imported_model_inference"].usd, 2)
    page = (ROOT / "docs" / "level-3-finetune.md").read_text()
    stated = [
        float(amount)
        for text in (README.read_text(), page)
        for amount in re.findall(r"\$([0-9.]+) per Custom Model Unit", text)
    ]
    assert len(stated) == 3 and set(stated) == {window}, stated


def test_the_readmes_price_dates_are_those_of_the_price_table() -> None:
    """The README says when the list prices were checked; kit/prices.json dates every entry."""
    import json
    from datetime import date, datetime

    dates = {
        date.fromisoformat(str(entry["date"]))
        for region in json.loads((ROOT / "kit" / "prices.json").read_text())["regions"].values()
        for entry in region.values()
        if isinstance(entry, dict) and "date" in entry
    }
    found = re.search(r"list prices checked (\d+ \w+) to\s+(\d+ \w+) (\d{4})", README.read_text())
    assert found, "the README's idle-cost paragraph no longer says when the prices were checked"
    first, last = (datetime.strptime(f"{day} {found[3]}", "%d %B %Y").date() for day in found.groups()[:2])
    assert (first, last) == (min(dates), max(dates))


def test_the_scp_advice_names_every_region_the_default_profile_may_use() -> None:
    """The default text model is a US cross-region inference profile; the function's grant names every region of
    its geography (common/geographies.py), and an SCP that denies one of them fails calls Bedrock routes there."""
    import json

    from common.geographies import PROFILE_GEOGRAPHIES

    model = json.loads((ROOT / "cdk.json").read_text())["context"]["text_model_id"]
    regions = PROFILE_GEOGRAPHIES[model.split(".", 1)[0]]
    for page in (README, ROOT / "docs" / "level-1-prompt.md"):
        text = " ".join(page.read_text().split())
        found = re.search(r"the four regions a US profile can route to: ([a-z0-9, -]+)\)", text)
        assert found, page
        assert tuple(part.strip() for part in found[1].split(",")) == regions, page


# --- AWS CLI commands the docs and the operator CLI tell people to run ---------------------------------------

# Commands of the AWS CLI itself, with no API operation of that name (the high-level `aws s3` commands,
# https://docs.aws.amazon.com/cli/latest/reference/s3/, and `aws sso login`), and the global options every
# command takes (https://docs.aws.amazon.com/cli/latest/userguide/cli-configure-options.html).
# The CLI's own commands (no API operation): aws configure list-profiles is AWS CLI v2's
# (https://awscli.amazonaws.com/v2/documentation/api/latest/reference/configure/list-profiles.html).
CLI_CUSTOMIZATIONS = {
    ("s3", "cp"),
    ("s3", "sync"),
    ("s3", "ls"),
    ("s3", "rm"),
    ("s3", "mv"),
    ("s3", "rb"),
    ("sso", "login"),
    ("configure", "list-profiles"),
}
# Options the AWS CLI names differently from the API member: `aws sns subscribe` takes the Endpoint member as
# --notification-endpoint (https://docs.aws.amazon.com/cli/latest/reference/sns/subscribe.html).
CLI_RENAMED_OPTIONS = {("sns", "subscribe"): {"notification-endpoint": "endpoint"}}
CLI_GLOBAL_OPTIONS = {"region", "query", "output", "profile", "no-cli-pager", "cli-binary-format", "endpoint-url"}
_COMMAND = re.compile(r"\baws ([a-z0-9-]+) ([a-z0-9-]+)([^`\n]*)")


DOC_PAGES = [
    README,
    ROOT / "lifecycle" / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    *sorted((ROOT / "workloads").glob("**/*.md")),
]


def _joined(path: Path) -> str:
    """A file's text with shell line continuations joined."""
    return re.sub(r"\\\n\s*", " ", path.read_text())


def fenced_blocks(path: Path) -> list[str]:
    """The fenced code blocks of a Markdown page, continuations joined."""
    return re.findall(r"```.*?```", _joined(path), flags=re.DOTALL)


def inline_code(path: Path) -> list[str]:
    """The inline code spans of a Markdown page, each on one line."""
    inline = re.findall(r"`([^`]+)`", re.sub(r"```.*?```", "", _joined(path), flags=re.DOTALL))
    return [span.replace("\n", " ") for span in inline]


def code_text(path: Path) -> str:
    """A file's text with shell line continuations joined; of a Markdown page only the code (fenced blocks and
    inline code), not the prose."""
    if path.suffix != ".md":
        return _joined(path)
    return "\n".join(fenced_blocks(path) + inline_code(path))


def python_strings(path: Path) -> str:
    """Every string literal of a Python file, one per line, as the interpreter joins it: implicit concatenation
    across lines makes one literal, and an f-string's replacement fields read as ``<value>``. A command written over
    several source lines is then seen whole."""
    import ast

    def text(node: ast.AST) -> str:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.JoinedStr):
            return "".join(text(part) if isinstance(part, ast.Constant) else "<value>" for part in node.values)
        return ""

    tree = ast.parse(path.read_text())
    inner = {id(part) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for part in node.values}
    literals = (node for node in ast.walk(tree) if isinstance(node, (ast.Constant, ast.JoinedStr)))
    return "\n".join(text(node) for node in literals if id(node) not in inner)


def _own_arguments(rest: str) -> str:
    """The text after `aws <service> <command>` that is that command's: quoted values and command substitutions
    blanked (a `--query "...[?x=='--y']"` or `"$(out Name)"` holds no option), up to a pipe, `;`, `&&`, a closing
    parenthesis or a comment."""
    rest = re.sub(r"\$\([^()]*\)", " ", rest)
    rest = re.sub(r"\"[^\"]*\"|'[^']*'", " ", rest)
    return re.split(r"\||;|&&|\)|\s#", rest)[0]


def aws_cli_commands() -> list[tuple[str, str, str, list[str]]]:
    """(file, service, command, --options) for each `aws <service> <command>` in the code of the README, the docs and
    the lifecycle README, and in the string literals of the operator CLI's source."""
    found = []
    for path in [*DOC_PAGES, *sorted((ROOT / "kit").glob("*.py"))]:
        text = python_strings(path) if path.suffix == ".py" else code_text(path)
        for service, command, rest in _COMMAND.findall(text):
            if command.endswith("-"):
                continue  # a family written as get-/put-/delete-...
            options = re.findall(r"(?<![\w-])--([a-z0-9-]+)", _own_arguments(rest))
            found.append((path.name, service, command, options))
    return found


def cli_command_findings(commands: list[tuple[str, str, str, list[str]]]) -> list[str]:
    """Commands and options the AWS CLI would refuse: each command is an API operation of botocore's model of the
    service (the CLI's own commands aside) and each option a member of its input."""
    import botocore.exceptions
    import botocore.session
    from botocore import xform_name

    session = botocore.session.get_session()
    found = []
    for where, service, command, options in commands:
        if (service, command) in CLI_CUSTOMIZATIONS:
            continue
        try:
            model = session.get_service_model(service)
        except botocore.exceptions.UnknownServiceError:
            found.append(f"{where}: aws {service}: no such service")
            continue
        operations = {xform_name(name, "-"): name for name in model.operation_names}
        if command not in operations:
            found.append(f"{where}: aws {service} {command}: no such operation")
            continue
        shape = model.operation_model(operations[command]).input_shape
        members = {xform_name(name, "-") for name in (shape.members if shape else {})}
        renamed = CLI_RENAMED_OPTIONS.get((service, command), {})
        for option in options:
            if renamed.get(option, option) not in members | CLI_GLOBAL_OPTIONS:
                found.append(f"{where}: aws {service} {command} --{option}: no such option")
        # A command shown with options is one to run, so it gives every member the operation requires (a command
        # named alone, in prose, is not: its options follow elsewhere).
        given = {renamed.get(option, option) for option in options}
        required = [xform_name(name, "-") for name in (shape.required_members if shape else [])]
        if options:
            found += [
                f"{where}: aws {service} {command}: --{name} is required" for name in required if name not in given
            ]
    return found


def test_every_aws_cli_command_the_kit_shows_exists_with_its_options() -> None:
    commands = aws_cli_commands()
    assert len(commands) >= 25
    assert cli_command_findings(commands) == []


def test_the_kit_source_scan_sees_a_command_written_over_several_lines(tmp_path: Path) -> None:
    # Before: the scan read the source text, so `"aws sns "` and `f"subscribe --topic-arn {arn}"` on the next line
    # were never checked (kit/doctor.py writes one like that).
    source = tmp_path / "example.py"
    source.write_text(
        'region = "us-east-1"\nhint = (\n    "run aws sns "\n'
        '    f"subscribe --topic-arn {region} --protocol email --bogus x"\n)\n'
    )
    text = python_strings(source)
    assert "run aws sns subscribe --topic-arn <value> --protocol email --bogus x" in text.splitlines()
    [(service, command, rest)] = _COMMAND.findall(text)
    options = re.findall(r"(?<![\w-])--([a-z0-9-]+)", rest)
    assert cli_command_findings([("example.py", service, command, options)]) == [
        "example.py: aws sns subscribe --bogus: no such option"
    ]


def test_the_cli_command_check_sees_a_wrong_operation_and_option() -> None:
    wrong = [
        ("x", "bedrock", "list-custom-models", ["name-contains", "region"]),
        ("x", "bedrock", "list-custom-model", []),
        ("x", "bedrock", "delete-custom-model", ["model-id"]),
        ("x", "stepfunction", "list-executions", []),
        ("x", "stepfunctions", "stop-execution", ["region"]),  # run without the execution it stops
        ("x", "stepfunctions", "stop-execution", []),  # named in prose: its options follow elsewhere
    ]
    assert cli_command_findings(wrong) == [
        "x: aws bedrock list-custom-model: no such operation",
        "x: aws bedrock delete-custom-model --model-id: no such option",
        "x: aws bedrock delete-custom-model: --model-identifier is required",
        "x: aws stepfunction: no such service",
        "x: aws stepfunctions stop-execution: --execution-arn is required",
    ]


def test_a_commands_options_are_read_past_quoted_values_and_substitutions() -> None:
    # Before: the scan stopped at the first quote, and at the parenthesis of "$(out Name)"
    line = """aws bedrock-agent list-ingestion-jobs --region "$(out Region)" --knowledge-base-id "$(out Id)" \\
    --data-source-id x --query "jobs[?status=='--bogus']" | head  # --not-an-option"""
    text = re.sub(r"\\\n\s*", " ", line)
    [(service, command, rest)] = _COMMAND.findall(text)
    options = re.findall(r"(?<![\w-])--([a-z0-9-]+)", _own_arguments(rest))
    assert options == ["region", "knowledge-base-id", "data-source-id", "query"]
    assert cli_command_findings([("x", service, command, options)]) == []


# --- kit commands the docs tell people to run ----------------------------------------------------------------

_KIT_START = re.compile(r"(?<![\w./-])kit (?=[a-z])")
_PLACEHOLDER = re.compile(r"VALUE|[A-Z][A-Z0-9_]*")  # what a page writes for a value the reader chooses


def kit_invocations(text: str) -> list[tuple[list[str], list[str]]]:
    """Each `kit ...` command of ``text`` as the shell would split it (up to a pipe, `;`, `&&`, a parenthesis,
    a backtick or a comment), with ``$(...)`` and ``<placeholder>`` read as the value VALUE; and the options a
    synopsis names alone in brackets (``[--json]``), which are checked to exist but not parsed. A bracketed part
    with alternatives (``[--level 1|2|3]``) and an ellipsis are left out."""
    import shlex

    found = []
    for match in _KIT_START.finditer(text):
        line = text[match.end() :].split("\n", 1)[0]
        line = re.sub(r"\$\([^()]*\)|<[^<>]*>", "VALUE", line)
        alone = re.findall(r"\[(--[a-z0-9-]+)\]", line)
        line = re.sub(r"\[(--[a-z0-9-]+)\]", " ", line)
        line = re.sub(r"\[([^\[\]|]*)\]", r" \1 ", line)
        line = re.sub(r"\[[^\[\]]*\]|…|\.\.\.", " ", line)
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|()`")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        words: list[str] = []
        try:
            for token in lexer:
                if set(token) <= set(";&|()`"):
                    break
                words.append(token)
        except ValueError as error:  # an unclosed quote
            words = ["?", str(error)]
        found.append((words, alone))
    return found


def kit_parse(words: Sequence[str], alone: Sequence[str] = ()) -> str | None:
    """Why the operator CLI would refuse ``kit <words>`` (None: it takes it), as click itself parses it: each
    command, option and choice, at the group and at the subcommand. A page may name a command without what it
    needs (a group alone, an option without its value, a required argument left to the reader), give a file of
    the reader's, or write a placeholder for a choice: none of those is a mistake."""
    import click

    from kit.cli import cli

    context: click.Context | None = None
    command: click.Command = cli
    name, args = "kit", list(words)
    try:
        while True:
            context = command.make_context(name, args, parent=context)
            rest = [*context._protected_args, *context.args] if isinstance(command, click.Group) else []
            if not rest:
                break
            assert isinstance(command, click.Group)
            resolved, found, args = command.resolve_command(context, rest)
            assert resolved is not None and found is not None
            name, command = resolved, found
    except (click.exceptions.NoArgsIsHelpError, click.exceptions.Exit, click.MissingParameter):
        return None
    except click.BadParameter as error:
        if isinstance(error.param.type if error.param else None, (click.Path, click.File)):
            return None
        message = error.format_message()
        choices = [str(choice) for choice in getattr(error.param.type if error.param else None, "choices", [])]
        if any(_placeholder(word, choices) and f"'{word}'" in message for word in words):
            return None
        return message
    except click.UsageError as error:
        message = error.format_message()
        return None if message.endswith("requires an argument.") else message
    options = {option for ctx in _chain(context) for param in ctx.command.params for option in param.opts}
    unknown = [option for option in alone if option not in options]
    return f"No such option '{unknown[0]}'." if unknown else None


def _placeholder(word: str, choices: Sequence[str]) -> bool:
    """Whether ``word`` stands for a value the reader chooses (``TYPE``, ``N``, a ``<...>`` or ``$(...)``), not a
    misspelt choice (``FINE_TUNNING``, close to one of ``choices``)."""
    import difflib

    return bool(_PLACEHOLDER.fullmatch(word)) and not difflib.get_close_matches(word, choices, n=1, cutoff=0.75)


def _chain(context: Any) -> list[Any]:
    """A click context and its parents."""
    chain = []
    while context is not None:
        chain.append(context)
        context = context.parent
    return chain


def kit_command_findings(pages: Sequence[Path]) -> list[str]:
    """Each `kit ...` command in the code of the pages that the operator CLI (kit/cli.py's click group) would
    refuse, with click's reason."""
    return [
        f"{path.name}: kit {' '.join(words)}: {reason}"
        for path in pages
        for words, alone in kit_invocations(code_text(path))
        if (reason := kit_parse(words, alone))
    ]


def test_every_kit_command_the_docs_show_exists_with_its_options() -> None:
    assert len([found for page in DOC_PAGES for found in kit_invocations(code_text(page))]) >= 40
    assert kit_command_findings(DOC_PAGES) == []


def test_the_kit_command_check_sees_a_wrong_command_option_or_choice(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "Run `kit l2 status`, `kit l2 sync --wait --fast`, `kit costs` and `kit doctor --level 2`.\n"
        '```\nkit l2 ask "what is it?" --bogus 3 | head\nkit l2 --stage prod sync --later\n'
        "kit l1 --nope templates\nkit l2 --stage staging sync\nkit l3 start --customization-type FINE_TUNNING\n"
        "kit cost [--stage] [--regions]\nkit l3 start --customization-type TYPE --upload <FILE> && kit l2 sync\n```\n"
    )
    assert kit_command_findings([page]) == [
        "page.md: kit l2 ask what is it? --bogus 3: No such option '--bogus'.",
        "page.md: kit l2 --stage prod sync --later: No such option '--later'. Did you mean '--wait'?",
        "page.md: kit l1 --nope templates: No such option '--nope'.",
        "page.md: kit l2 --stage staging sync: Invalid value for '--stage': 'staging' is not one of 'sandbox', 'prod'.",
        "page.md: kit l3 start --customization-type FINE_TUNNING: Invalid value for '--customization-type': "
        "'FINE_TUNNING' is not one of 'FINE_TUNING', 'CONTINUED_PRE_TRAINING', 'DISTILLATION', "
        "'REINFORCEMENT_FINE_TUNING'.",
        "page.md: kit cost: No such option '--regions'.",
        "page.md: kit l2 status: No such command 'status'.",
        "page.md: kit l2 sync --wait --fast: No such option '--fast'. Did you mean '--wait'?",
        "page.md: kit costs: No such command 'costs'. Did you mean 'cost'?",
    ]


# A stack output a page tells the reader to read: `OutputKey=='X'` in a --query, `$(out X)` (the README's
# helper), `<X output>` in a command, and "the `X` output" in prose.
_OUTPUT_NAMED = re.compile(
    r"OutputKey=='([A-Za-z0-9]+)'|\$\(out ([A-Za-z0-9]+)\)|<([A-Za-z0-9]+) output>|`([A-Za-z0-9]+)` output"
)


def outputs_named(pages: Sequence[Path]) -> dict[str, set[str]]:
    """The stack outputs each page names, by page name."""
    found: dict[str, set[str]] = {}
    for path in pages:
        for groups in _OUTPUT_NAMED.findall(_joined(path)):
            found.setdefault(path.name, set()).add(next(name for name in groups if name))
    return found


def test_every_stack_output_the_docs_name_is_one_a_stack_has(
    sandbox: Any, prod: Any, sandbox_fsx: Any, sandbox_oss: Any
) -> None:
    """Before, an output the docs named was checked only by reading: a renamed output left a command that answers
    None. Any stage or storage variant may be the one that has it (FsxDnsName only with FSx)."""
    synthesized = {
        key
        for synth in (sandbox, prod, sandbox_fsx, sandbox_oss)
        for t in synth.templates.values()
        for key in t.get("Outputs", {})
    }
    named = outputs_named(DOC_PAGES)
    assert sum(len(names) for names in named.values()) >= 10
    assert {page: sorted(names - synthesized) for page, names in named.items() if names - synthesized} == {}


def test_the_output_scan_reads_each_way_a_page_names_an_output(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "--query \"Stacks[0].Outputs[?OutputKey=='ApiUrl'].OutputValue\" $(out KnowledgeBaseId) "
        "--bucket <DataBucketName output>; read the `KeyArn` output"
    )
    assert outputs_named([page]) == {"page.md": {"ApiUrl", "KnowledgeBaseId", "DataBucketName", "KeyArn"}}


# The AWS CLI's own Region-free commands: `aws s3` follows a bucket to its Region, `aws sso login` signs in.
REGION_FREE_SERVICES = {"s3", "sso"}
FUNCTIONS = ROOT / "lambdas"


def _runnable(line: str) -> bool:
    """Whether an inline span is a command to run: it gives an option, or names an operation that takes no required
    parameter in botocore's model (such as delete-model-invocation-logging-configuration), written alone or in a
    family (`get-/put-/delete-...`). Otherwise it names the command."""
    for match in _COMMAND.finditer(line):
        if re.search(r"(?<![\w-])--[a-z]", match.group(3)):
            return True
        family = re.match(r"((?:[a-z]+-/)*[a-z]+-)([a-z0-9-]+)", line[match.start(2) :])
        names = [f"{verb}{family.group(2)}" for verb in family.group(1).split("/")] if family else [match.group(2)]
        operations = _operations_without_required_input(match.group(1))
        if any(name in operations for name in names):
            return True
    return False


@functools.cache
def _operations_without_required_input(service: str) -> frozenset[str]:
    """The CLI names of a service's operations whose input has no required member (none for a service botocore does
    not model). Cached: loading a service model is the slow part, and the pages name the same few services."""
    import botocore.exceptions
    import botocore.session
    from botocore import xform_name

    try:
        model = botocore.session.get_session().get_service_model(service)
    except botocore.exceptions.UnknownServiceError:
        return frozenset()
    return frozenset(
        xform_name(name, "-")
        for name in model.operation_names
        if not ((shape := model.operation_model(name).input_shape) and shape.required_members)
    )


@functools.cache
def _api_services() -> frozenset[str]:
    """The services an `aws <service>` command can name: botocore's models (the CLI's own s3 is one of them)."""
    import botocore.session

    return frozenset(botocore.session.get_session().get_available_services())


def commands_without_region(pages: Sequence[Path], sources: Sequence[Path] = ()) -> list[str]:
    """Each `aws <service> <command>` of a fenced example, of an inline span that gives an option, or of a string
    literal of a function's source (a status reason or message that tells the reader what to run) that names no
    `--region`: the kit's stacks live in one Region, and a reader whose CLI defaults to another would be told the
    stack or resource does not exist, or act on that other Region's."""
    found = []
    for path in pages:
        lines = [line for block in fenced_blocks(path) for line in block.splitlines()]
        for line in lines + [span for span in inline_code(path) if _runnable(span)]:
            if any(
                service not in REGION_FREE_SERVICES and "region" not in options for service, _, options in _each(line)
            ):
                found.append(f"{path.name}: {line.strip()}")
    for path in sources:
        for literal in python_strings(path).splitlines():
            for service, command, options in _each(literal):
                if service not in _api_services():
                    continue  # prose such as "an aws partition region", not a command
                if service not in REGION_FREE_SERVICES and "region" not in options:
                    found.append(f"{path.parent.name}/{path.name}: {command}")
    return found


def _each(line: str) -> list[tuple[str, str, list[str]]]:
    """(service, the command's text, its own --options) for each `aws <service> <command>` of ``line``, the
    command ending at a backtick: a second command after `&&` or a pipe is checked on its own, and an option in a
    comment or a quoted value is none."""
    found = []
    for match in re.finditer(r"\baws ([a-z0-9-]+) ([a-z0-9-]+)", line):
        text = line[match.start() :].split("`", 1)[0]
        options = re.findall(r"(?<![\w-])--([a-z0-9-]+)", _own_arguments(text[match.end() - match.start() :]))
        found.append((match.group(1), text.strip(), options))
    return found


def test_every_aws_cli_example_names_its_region(tmp_path: Path) -> None:
    # The functions' messages, and the stacks' (alarm descriptions, state machine errors).
    sources = sorted(FUNCTIONS.glob("**/*.py")) + sorted((ROOT / "stacks").glob("**/*.py"))
    assert commands_without_region(DOC_PAGES, sources) == []
    page = tmp_path / "page.md"
    lines = [
        "```bash",
        "aws s3 cp a s3://b/",
        "aws bedrock list-custom-models",
        "aws sts get-caller-identity --region y",
        "aws bedrock list-custom-models  # add --region",
        "aws sts get-caller-identity --region y && aws bedrock list-imported-models",
        "aws bedrock list-imported-models --query \"x[?y=='--region']\"",
        "```",
        "List them with `aws bedrock list-imported-models --name-contains x` (`aws bedrock get-imported-model`",
        "names one); finish with `aws bedrock get-/delete-model-invocation-logging-configuration`.",
    ]
    page.write_text("\n".join(lines))
    source = tmp_path / "handler.py"
    source.write_text(
        'HAND = "run `aws bedrock delete-model-invocation-logging-configuration`"\n'
        'BOTH = "`aws sts get-caller-identity --region x`, then `aws bedrock list-custom-models`"\n'
    )
    assert commands_without_region([page], [source]) == [
        "page.md: aws bedrock list-custom-models",
        "page.md: aws bedrock list-custom-models  # add --region",
        "page.md: aws sts get-caller-identity --region y && aws bedrock list-imported-models",
        "page.md: aws bedrock list-imported-models --query \"x[?y=='--region']\"",
        "page.md: aws bedrock list-imported-models --name-contains x",
        "page.md: aws bedrock get-/delete-model-invocation-logging-configuration",
        f"{tmp_path.name}/handler.py: aws bedrock delete-model-invocation-logging-configuration",
        f"{tmp_path.name}/handler.py: aws bedrock list-custom-models",
    ]


# A Region code in a command (--region us-east-1), whatever the quoting.
_REGION_GIVEN = re.compile(r"--region[ =]+['\"]?([a-z]{2}(?:-gov)?-[a-z]+-\d)\b")


def hard_coded_regions(pages: Sequence[Path], allowed: str | None = None) -> list[str]:
    """Each command in the code of the pages that gives `--region` a Region code other than ``allowed``: the stacks
    are in the configured `region`, which a page cannot know."""
    return [
        f"{path.name}: {line.strip()}"
        for path in pages
        for line in code_text(path).splitlines()
        if any(code != allowed for code in _REGION_GIVEN.findall(line))
    ]


def test_no_page_hard_codes_the_region_its_commands_run_in(tmp_path: Path) -> None:
    """Before: docs/level-3-finetune.md deleted the Hub token's secret with `--region us-east-1` whatever the stack's
    region. Only the README's quick starts, which run the default config, may give cdk.json's region."""
    import json

    default = json.loads((ROOT / "cdk.json").read_text())["context"]["region"]
    assert hard_coded_regions([README], allowed=default) == []
    assert hard_coded_regions([page for page in DOC_PAGES if page != README]) == []
    page = tmp_path / "page.md"
    page.write_text('Delete it: `aws secretsmanager delete-secret --region us-east-1 --secret-id x`; `--region "$R"`.')
    assert hard_coded_regions([page]) == ["page.md: aws secretsmanager delete-secret --region us-east-1 --secret-id x"]


# --- AWS CLI commands the operator CLI prints ----------------------------------------------------------------
# The CLI's own commands that take neither option for the target: `aws configure list-profiles` lists the profiles
# of the local config (https://awscli.amazonaws.com/v2/documentation/api/latest/reference/configure/list-profiles.html).
TARGET_FREE_COMMANDS = {("configure", "list-profiles")}
# `aws sso login` signs in one profile's SSO session and has no Region to give
# (https://docs.aws.amazon.com/cli/latest/reference/sso/login.html).
PROFILE_ONLY_COMMANDS = {("sso", "login")}


def printed_commands_without_target(paths: Sequence[Path]) -> list[str]:
    """Each `aws <service> <command>` in a string literal of the kit's source that does not carry the target the kit
    command ran against: its Region and profile come from ``Target.cli_options()`` (or are both written out), and
    `aws sso login`'s profile from ``profile_option()``. Without them the CLI uses its own default Region and
    profile: another Region's resources, or another account's (kit/aws.py cli_options)."""
    import ast

    found = []
    for path in paths:
        tree = ast.parse(path.read_text())
        inner = {id(part) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for part in node.values}
        for node in ast.walk(tree):
            if id(node) in inner or not isinstance(node, (ast.Constant, ast.JoinedStr)):
                continue
            parts = node.values if isinstance(node, ast.JoinedStr) else [node]
            fields: list[ast.expr] = []
            text = ""
            for part in parts:
                if isinstance(part, ast.Constant) and isinstance(part.value, str):
                    text += part.value
                elif isinstance(part, ast.FormattedValue):
                    text += f"<field {len(fields)}>"
                    fields.append(part.value)
            for match in re.finditer(r"\baws ([a-z0-9-]+) ([a-z0-9-]+)[^`'\"\n|;)]*", text):
                command = (match.group(1), match.group(2))
                called = {
                    field.func.attr if isinstance(field.func, ast.Attribute) else getattr(field.func, "id", "")
                    for field in (fields[int(n)] for n in re.findall(r"<field (\d+)>", match.group(0)))
                    if isinstance(field, ast.Call)
                }
                if command in TARGET_FREE_COMMANDS:
                    continue
                if command in PROFILE_ONLY_COMMANDS:
                    carried = "profile_option" in called or "--profile" in match.group(0)
                else:
                    written = "--region" in match.group(0) and "--profile" in match.group(0)
                    carried = "cli_options" in called or written
                if not carried:
                    shown = re.sub(r"<field \d+>", "<value>", match.group(0))
                    found.append(f"{path.name}:{node.lineno}: {shown}")
    return found


def test_every_aws_cli_command_the_kit_prints_carries_the_targets_region_and_profile() -> None:
    """Before: kit doctor's quota, Marketplace and model-listing commands, kit l2 sync's get-ingestion-job and the
    SSO hint named no profile: after `kit ... --profile P` they acted in the default profile's account."""
    sources = sorted((ROOT / "kit").glob("*.py"))
    assert printed_commands_without_target(sources) == []
    # the scan sees the kit's commands: one per place the kit prints one
    assert len([m for path in sources for m in _COMMAND.findall(python_strings(path))]) >= 13


def test_the_printed_command_scan_sees_a_command_without_the_target(tmp_path: Path) -> None:
    source = tmp_path / "example.py"
    source.write_text(
        "def hints(target, region, profile):\n"
        '    a = f"aws bedrock list-imported-models --region {region}"\n'
        '    b = (f"run aws service-quotas request-service-quota-increase --quota-code Q "\n'
        '         f"{target.cli_options()})")\n'
        '    c = "the AWS SSO session has expired: run aws sso login"\n'
        '    d = f"run aws sso login{aws.profile_option(profile)}"\n'
        '    e = "list them with aws configure list-profiles"\n'
        '    f = f"`aws bedrock list-custom-models {target.cli_options()}`, then `aws bedrock get-custom-model`"\n'
    )
    assert printed_commands_without_target([source]) == [
        "example.py:2: aws bedrock list-imported-models --region <value>",
        "example.py:5: aws sso login",
        "example.py:8: aws bedrock get-custom-model",
    ]


# --- what the removal steps do to data they say is kept -----------------------------------------------------


def _key_encrypted_retained_buckets(template: dict[str, Any]) -> dict[str, list[str]]:
    """{output naming a KMS key: the outputs naming the buckets that key encrypts and a delete keeps}."""
    resources, outputs = template.get("Resources", {}), template.get("Outputs", {})

    def named_by(value: Any) -> list[str]:
        return [key for key, output in outputs.items() if output.get("Value") == value]

    found: dict[str, list[str]] = {}
    for key_id in [lid for lid, r in resources.items() if r["Type"] == "AWS::KMS::Key"]:
        key_arn = {"Fn::GetAtt": [key_id, "Arn"]}
        buckets = []
        for lid, resource in resources.items():
            rules = (resource.get("Properties", {}).get("BucketEncryption") or {}).get(
                "ServerSideEncryptionConfiguration", []
            )
            encrypted = any(
                (rule.get("ServerSideEncryptionByDefault") or {}).get("KMSMasterKeyID") == key_arn for rule in rules
            )
            if resource["Type"] == "AWS::S3::Bucket" and encrypted and resource.get("DeletionPolicy") == "Retain":
                buckets.append(named_by({"Ref": lid}) or [f"<no output names {lid}>"])
        for output in named_by(key_arn):
            found[output] = [names[0] for names in buckets]
    return found


def test_the_key_deletion_steps_first_empty_and_delete_the_kept_buckets_the_key_encrypts(prod: Any) -> None:
    """Before: the prod removal steps scheduled the deletion of Level 3's key "only when no model encrypted with it is
    left", while the buckets the destroy keeps are encrypted with it: their datasets and job outputs became unreadable
    (https://docs.aws.amazon.com/kms/latest/developerguide/deleting-keys.html). Each bucket a retained key encrypts
    and a delete keeps must be removed, by its output's name, before the step that schedules the key's deletion."""
    keys = {
        output: (stack_id, buckets)
        for stack_id, template in prod.templates.items()
        for output, buckets in _key_encrypted_retained_buckets(template).items()
    }
    assert any(buckets for _, buckets in keys.values())  # Level 3's data and output buckets
    steps = 0
    for page in DOC_PAGES:
        for block in fenced_blocks(page):
            lines = block.splitlines()
            for at, line in enumerate(lines):
                scheduled = re.search(r"\baws kms schedule-key-deletion .*--key-id <(\w+) output>", line)
                if not scheduled:
                    continue
                steps += 1
                _, buckets = keys[scheduled.group(1)]
                before = "\n".join(lines[:at])
                for bucket in buckets:
                    assert f'aws s3 rb "s3://<{bucket} output>"' in before, (page.name, bucket)
    assert steps >= 1
    # and the README's list of what a prod destroy leaves says it of the key
    items = README.read_text().split("\n- ")
    [item] = [text for text in items if "KMS key" in text and "schedule its deletion" in text]
    for _, buckets in keys.values():
        for bucket in buckets:
            assert bucket in item, bucket


# --- shell quoting ----------------------------------------------------------------------------------------


def test_the_move_of_documents_from_a_refused_prefix_survives_the_shell() -> None:
    """Before: `aws s3 mv s3://<bucket>/<old>/ ...` unquoted, for a prefix the page itself says has characters the
    kit refuses (`docs(v2)/`): bash refused the line (`(` is a control operator), and a space split the URI. The
    command is run through bash (syntax only) and shlex with the page's own example prefix in place of <old>."""
    import shlex
    import subprocess

    page = ROOT / "docs" / "level-2-rag.md"
    prose = _joined(page)
    [example] = re.findall(r"a prefix such as `([^`]+)`", prose)
    [command] = [span for span in inline_code(page) if span.startswith("aws s3 mv ") and "<old>" in span]
    for prefix in (example, f"my {example}"):
        line = command.replace("<old>/", prefix)
        line = re.sub(r"<[^>]+>", "x", line)  # the other placeholders
        checked = subprocess.run(["bash", "-n", "-c", line], capture_output=True, text=True, check=False)
        assert checked.returncode == 0, (line, checked.stderr)
        uris = [word for word in shlex.split(line) if word.startswith("s3://")]
        assert len(uris) == 2 and uris[0].endswith(f"/{prefix}"), uris
