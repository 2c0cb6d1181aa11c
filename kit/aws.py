"""The kit's one seam to AWS: which account/region/stage a command targets, boto3 sessions and clients
(created on first use and cached), CloudFormation stack outputs, and AWS errors turned into one line.

Every command resolves a :class:`Target` from the kit's own configuration (``cdk.json``'s context through
``stacks.config.load_config``) with ``--stage``, ``--region``, ``--profile`` and ``-c key=value`` overrides,
so it talks to the same stacks that ``make deploy`` created: ``f"{stack_id}-{stage}"`` in the config's region.
"""

from __future__ import annotations

import contextlib
import json
import shlex
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.errors import NOT_FOUND_CODES
from kit import (
    KitError,  # the CLI's one error type: click prints "Error: <message>" and exits with 1
    KitUsageError,  # exits with 2: a bad option or configuration value
)
from kit.templates import importable_checkout, repo_root
from stacks.shared.facts import PINNED_POWERTOOLS_LAYER, SANDBOX, STACK_IDS

if TYPE_CHECKING:
    from stacks.config import KitConfig


def stack_id(key: str) -> str:
    """The id app.py gives the stack of ``key``."""
    return STACK_IDS[key]


NO_CREDENTIALS = "no AWS credentials: configure a profile or environment variables"
# Stack states in which a stack has no usable outputs.
_UNUSABLE_STATES = {
    "CREATE_IN_PROGRESS": "is still being created: wait for make deploy to finish",
    "REVIEW_IN_PROGRESS": "is waiting for a change set to be executed",
    "CREATE_FAILED": "failed to deploy",
    "ROLLBACK_IN_PROGRESS": "failed to deploy and is rolling back",
    "ROLLBACK_FAILED": "failed to deploy and its rollback failed",
    "ROLLBACK_COMPLETE": "failed to deploy and was rolled back",
    "DELETE_IN_PROGRESS": "is being deleted",
    "DELETE_FAILED": "failed to delete",
}
_EXPIRED_CODES = frozenset({"ExpiredToken", "ExpiredTokenException", "RequestExpired"})
_REJECTED_CODES = frozenset(
    {"InvalidClientTokenId", "UnrecognizedClientException", "InvalidSignatureException", "SignatureDoesNotMatch"}
)
ACCESS_DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnauthorizedOperation",
        "AuthorizationError",
        "AuthorizationErrorException",
        "NotAuthorized",
    }
)
# Control-plane calls answer in seconds. botocore's standard mode retries throttling, 5xx answers and timeouts with
# backoff; "total_max_attempts" counts the first request too (botocore/config.py), so an endpoint that never answers
# holds a command for at most 4 x 20 s, not 6 x 60 s.
CLIENT_CONFIG: Mapping[str, Any] = {
    "retries": {"mode": "standard", "total_max_attempts": 4},
    "connect_timeout": 5,
    "read_timeout": 20,
    "user_agent_extra": "genai-spectrum-kit",
}

# A model's answer arrives whole when generation ends, which can take longer than CLIENT_CONFIG's 20 s ("Large models
# ... can take more than sixty seconds", https://repost.aws/knowledge-center/bedrock-large-model-read-timeouts), and
# botocore's standard mode retries a read timeout as a transient error, so CLIENT_CONFIG would ask four times for an
# answer that takes too long. Model calls wait longer and try twice.
MODEL_CLIENT_CONFIG: Mapping[str, Any] = {
    **CLIENT_CONFIG,
    "retries": {"mode": "standard", "total_max_attempts": 2},
    "read_timeout": 300,
}


class StackNotDeployed(KitError):
    """The stack a command needs does not exist in the target region."""


# --- sessions and clients (created on first use, cached per region and profile) ----------------------------

_sessions: dict[tuple[str | None, str | None], Any] = {}
_clients: dict[tuple[str, str | None, str | None], Any] = {}
_loader: list[Any] = []  # botocore's data loader (service models), shared by every session: loaded once


def reset() -> None:
    """Forget every cached session and client, so credentials and settings are read again (tests)."""
    _sessions.clear()
    _clients.clear()


def data_loader() -> Any:
    """botocore's data loader (service models, endpoints), made without a session: a session's own reads the
    profile's data_path first, so a missing profile would fail even the offline model reads."""
    if not _loader:
        from botocore.loaders import create_loader

        _loader.append(create_loader())
    return _loader[0]


def service_model(service: str) -> Any:
    """botocore's API model of ``service`` (no profile, credentials or network needed)."""
    from botocore.model import ServiceModel

    return ServiceModel(data_loader().load_service_model(service, "service-2"), service_name=service)


def profile_not_found(exc: BaseException, profile: str | None = None) -> str:
    """One line for botocore's ProfileNotFound: which profile, where it was named (--profile, or the variables
    botocore reads: AWS_DEFAULT_PROFILE, AWS_PROFILE) and what to do."""
    import os

    kwargs = getattr(exc, "kwargs", None)
    name = str((kwargs if isinstance(kwargs, dict) else {}).get("profile") or profile or "?")
    named_by = [variable for variable in ("AWS_DEFAULT_PROFILE", "AWS_PROFILE") if os.environ.get(variable) == name]
    source = "--profile" if profile == name else (named_by[0] if named_by else "--profile or AWS_PROFILE")
    return (
        f"AWS profile {name!r} (from {source}) is not in your AWS config: list the profiles with "
        f"aws configure list-profiles, then name one of them with {source}"
    )


def config_unreadable(exc: BaseException) -> str:
    """One line for an AWS configuration botocore cannot read (ConfigParseError names the file)."""
    return (
        f"cannot read your AWS configuration: {exc}. Fix that file (AWS_CONFIG_FILE and AWS_SHARED_CREDENTIALS_FILE "
        "name the files; by default ~/.aws/config and ~/.aws/credentials)"
    )


def session(region: str | None, profile: str | None = None) -> Any:
    """A boto3 session for ``region`` (None: the profile's or environment's default) and ``profile``."""
    key = (region, profile)
    if key not in _sessions:
        import boto3
        import botocore.session
        from botocore.exceptions import BotoCoreError, ProfileNotFound

        core = botocore.session.get_session()
        core.register_component("data_loader", data_loader())
        try:
            made = boto3.Session(botocore_session=core, region_name=region, profile_name=profile)
            # botocore reads the profile lazily, at the first client or credentials lookup; read it here, where
            # its absence can be told in one line (a profile named by --profile or by AWS_PROFILE).
            core.get_scoped_config()
        except ProfileNotFound as exc:
            raise KitError(profile_not_found(exc, profile)) from None
        except BotoCoreError as exc:  # a config file botocore cannot parse (ConfigParseError), and the like
            raise KitError(config_unreadable(exc)) from None
        _sessions[key] = made
    return _sessions[key]


def client(name: str, region: str | None = None, profile: str | None = None) -> Any:
    """The boto3 client for service ``name``; the same object on every call with the same arguments."""
    return _cached_client((name, region, profile), name, region, profile, CLIENT_CONFIG)


def model_client(name: str, region: str | None = None, profile: str | None = None) -> Any:
    """The client of service ``name`` (bedrock-runtime) for model invocations (MODEL_CLIENT_CONFIG); cached like
    ``client``."""
    return _cached_client((f"{name}:model", region, profile), name, region, profile, MODEL_CLIENT_CONFIG)


def _cached_client(
    key: tuple[str, str | None, str | None], name: str, region: str | None, profile: str | None, config: Any
) -> Any:
    if key not in _clients:
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, InvalidRegionError

        try:
            _clients[key] = session(region, profile).client(name, config=Config(**config))
        except InvalidRegionError:
            raise KitUsageError(f"{region!r} is not an AWS region code (e.g. us-east-1): check --region") from None
        except BotoCoreError as exc:  # making a client resolves the credentials: a broken profile fails here
            message = explain(exc, "loading the AWS credentials", region, profile)
            raise KitError(message or f"loading the AWS credentials failed: {exc}") from None
    return _clients[key]


def client_profile(made: Any) -> str | None:
    """The profile a client from :func:`client` or :func:`model_client` was made with (None: the default profile,
    or a client made elsewhere)."""
    return next((key[2] for key, cached in _clients.items() if cached is made), None)


def _of_profile(profile: str | None) -> str:
    return f" of profile {profile!r}" if profile else ""


def profile_option(profile: str | None) -> str:
    """`` --profile <profile>`` for an AWS CLI command the kit prints, when the command was given one ('' when not):
    without it the CLI signs with its default profile, another account's credentials or SSO session
    (https://docs.aws.amazon.com/cli/latest/userguide/cli-configure-files.html#cli-configure-files-using-profiles)."""
    return f" --profile {shlex.quote(profile)}" if profile else ""


def default_region(profile: str | None = None) -> str | None:
    """The region the profile or environment would use on its own: botocore reads AWS_DEFAULT_REGION, then the
    profile's ``region`` (not AWS_REGION: botocore/configprovider.py). The kit and the deploy do not use it."""
    region: str | None = session(None, profile).region_name
    return region


def credentials(region: str | None, profile: str | None = None) -> Any:
    """The caller's credentials (for SigV4), or KitError when there are none."""
    with aws_errors("reading AWS credentials", region, profile):
        found = session(region, profile).get_credentials()
    if found is None:
        raise KitError(NO_CREDENTIALS)
    return found


# --- errors --------------------------------------------------------------------------------------------------


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ClientError ('' for anything else)."""
    response = getattr(exc, "response", None)
    return str(((response or {}).get("Error") or {}).get("Code") or "") if isinstance(response, dict) else ""


def error_message(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str((response.get("Error") or {}).get("Message") or exc)
    return str(exc)


def not_found(exc: BaseException) -> bool:
    """An answer that the named resource does not exist. botocore's models name the error ResourceNotFoundException
    (ResourceNotFound in SageMaker's); SageMaker's Describe* calls answer a missing job or cluster with
    ValidationException "Requested resource not found" (or "Could not find training job ...", as moto words it),
    so that code counts only with such words: any other validation refusal is not taken as "it is not there"."""
    code, message = error_code(exc), error_message(exc).lower()
    return code in NOT_FOUND_CODES or (
        code == "ValidationException" and ("not found" in message or "could not find" in message)
    )


def is_access_denied(exc: BaseException) -> bool:
    return error_code(exc) in ACCESS_DENIED_CODES or "not authorized" in error_message(exc).lower()


def explain(exc: BaseException, action: str, region: str | None = None, profile: str | None = None) -> str | None:
    """One line saying what went wrong and what to do, for the AWS errors every command can meet; ``profile``, the
    one the command was given, is named in the SSO sign-in command, which otherwise signs in the default profile's
    session (https://docs.aws.amazon.com/cli/latest/reference/sso/login.html)."""
    from botocore import exceptions as bex

    where = f" in {region}" if region else ""
    if isinstance(exc, (bex.NoCredentialsError, bex.PartialCredentialsError)):
        return NO_CREDENTIALS
    if isinstance(exc, (bex.TokenRetrievalError, bex.SSOTokenLoadError, bex.UnauthorizedSSOTokenError)):
        return f"the AWS SSO session has expired or is missing: run aws sso login{profile_option(profile)}"
    if isinstance(exc, bex.ProfileNotFound):
        return profile_not_found(exc, profile)
    if isinstance(exc, bex.ConfigParseError):
        return config_unreadable(exc)
    if isinstance(exc, (bex.CredentialRetrievalError, bex.InvalidConfigError)):
        return f"cannot load the AWS credentials{_of_profile(profile)}: {exc}: fix that profile in your AWS config"
    if isinstance(exc, bex.ReadTimeoutError):
        endpoint = exc.kwargs.get("endpoint_url", "AWS")
        return f"no answer from {endpoint} while {action}: check your network and proxy (HTTPS_PROXY, AWS_ENDPOINT_URL)"
    if isinstance(exc, bex.ConnectionError):  # refused, DNS, connect timeout, proxy, TLS
        endpoint = exc.kwargs.get("endpoint_url", "AWS")
        return f"cannot reach {endpoint}: check --region, your network and proxy (HTTPS_PROXY, AWS_ENDPOINT_URL)"
    if isinstance(exc, bex.NoRegionError):
        return "no AWS region: set region in cdk.json or pass --region"
    if not isinstance(exc, bex.ClientError):
        return None
    code = error_code(exc)
    if code in _EXPIRED_CODES:
        return f"the AWS credentials have expired: refresh them (aws sso login{profile_option(profile)}, or new keys)"
    if code in _REJECTED_CODES:
        return f"the AWS credentials were rejected{where}: check them, and that the region is enabled for the account"
    if is_access_denied(exc):
        return f"access denied while {action}{where}: {error_message(exc)}"
    return f"{action} failed{where}: {code}: {error_message(exc)}"


@contextlib.contextmanager
def aws_errors(action: str, region: str | None = None, profile: str | None = None) -> Iterator[None]:
    """Turn AWS errors raised inside the block into one-line KitErrors (``action`` says what was tried)."""
    from botocore.exceptions import BotoCoreError, ClientError
    from botocore.parsers import ResponseParserError

    try:
        yield
    except (BotoCoreError, ClientError) as exc:
        message = explain(exc, action, region, profile)
        raise KitError(message or f"{action} failed: {exc}") from None
    except ResponseParserError:  # an answer that is not AWS's (not a BotoCoreError): a proxy or a captive portal
        raise KitError(
            f"{action} failed: the answer did not come from AWS (a proxy, a firewall or a captive portal in the "
            "way?): check your network and proxy settings (HTTPS_PROXY, AWS_ENDPOINT_URL)"
        ) from None


# --- stacks --------------------------------------------------------------------------------------------------


def deploy_hint(stack_name: str, verb: str = "deploy") -> str:
    """``make deploy STACK=<id>`` (or ``verb``: destroy) for a stack name ``<id>-<stage>`` (plus the stage when it
    is not sandbox)."""
    stack_id, _, stage = stack_name.rpartition("-")
    if not stack_id:
        return f"{verb} {stack_name}"
    extra = f' CDK_ARGS="-c stage={stage}"' if stage != SANDBOX else ""
    return f"make {verb} STACK={stack_id}{extra}"


def redeploy_hint(stack_name: str) -> str:
    """``make destroy STACK=<id>, then make deploy STACK=<id>`` (with the stage), for a stack to create again."""
    return f"{deploy_hint(stack_name, 'destroy')}, then {deploy_hint(stack_name)}"


def stack_outputs(stack_name: str, region: str | None = None, profile: str | None = None) -> dict[str, str]:
    """The outputs of a deployed stack as ``{OutputKey: OutputValue}``; KitError when it is not usable."""
    from botocore.exceptions import ClientError

    cloudformation = client("cloudformation", region, profile)
    shown_region = region or cloudformation.meta.region_name
    with aws_errors(f"reading stack {stack_name}", shown_region, profile):
        try:
            stacks = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
        except ClientError as exc:
            if error_code(exc) != "ValidationError" or "does not exist" not in error_message(exc):
                raise
            stacks = []
    if not stacks:
        raise StackNotDeployed(f"{stack_name} is not deployed in {shown_region}: run {deploy_hint(stack_name)}")
    stack = stacks[0]
    status = str(stack.get("StackStatus", ""))
    if status in _UNUSABLE_STATES:
        message = f"{stack_name} {_UNUSABLE_STATES[status]} ({status} in {shown_region})"
        if status.endswith(("FAILED", "ROLLBACK_COMPLETE")):
            message += f": see its events in the CloudFormation console, {redeploy_hint(stack_name)}"
        raise KitError(message)
    return {str(o["OutputKey"]): str(o.get("OutputValue", "")) for o in stack.get("Outputs") or []}


def require_output(outputs: Mapping[str, str], key: str, stack_name: str) -> str:
    """One output, or KitError naming the stack and what to do (an older deployment lacks newer outputs)."""
    value = outputs.get(key)
    if not value:
        raise KitError(f"{stack_name} has no output {key}: redeploy it with this kit ({deploy_hint(stack_name)})")
    return value


# --- the target: configuration plus overrides ---------------------------------------------------------------


def checkout() -> Path:
    """The kit's checkout (cdk.json, app.py, stacks/, lambdas/), the same one its modules import from.

    The CLI imports stacks/ and lambdas/ through the editable install (pyproject.toml): at import time only
    plain-data modules (stacks.shared.facts, finetune_validate.formats), the app and its config at run time.
    """
    return importable_checkout(repo_root())


def read_cdk_context(path: Path | None = None) -> dict[str, Any]:
    """The kit keys of cdk.json's context (the CDK's own feature flags are left out)."""
    path = path or checkout() / "cdk.json"
    try:
        context = json.loads(path.read_text()).get("context") or {}
    except (OSError, ValueError) as exc:
        raise KitUsageError(f"cannot read the kit configuration from {path}: {exc}") from None
    return {k: v for k, v in context.items() if v is not None and ":" not in k and "@" not in k}


def parse_context_pairs(pairs: Sequence[str]) -> dict[str, str]:
    """``-c key=value`` pairs, the way the CDK CLI takes them."""
    values: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise KitUsageError(f"-c expects key=value, got {pair!r}")
        values[key.strip()] = value
    return values


@dataclass
class Target:
    """Where a command points: the kit configuration (with overrides) and the AWS profile."""

    stage: str | None = None
    region_override: str | None = None
    profile: str | None = None
    context: Mapping[str, str] = field(default_factory=dict)

    @cached_property
    def config(self) -> KitConfig:
        checkout()
        from stacks.config import ConfigError, load_config

        context = {**read_cdk_context(), **self.context}
        if self.stage:
            context["stage"] = self.stage
        if self.region_override:
            context["region"] = self.region_override
        try:
            return load_config(context, pinned_layer_version=PINNED_POWERTOOLS_LAYER)
        except ConfigError as exc:
            raise KitUsageError(str(exc)) from None

    @property
    def region(self) -> str:
        return self.config.region

    def stack_name(self, key: str) -> str:
        return f"{stack_id(key)}-{self.config.stage}"

    def kit_command(self, group: str, rest: str) -> str:
        """``kit <group> <options> <rest>``, a kit command the kit prints (a hint to follow or check a run), with
        the options this command was given (``--stage``, ``--region``, ``--profile``, each ``-c``), which go on the
        level's group: without them it would read another stage's stack, or another account's."""
        pairs = self._overrides()
        options = [("--stage", pairs.pop("stage", None)), ("--region", pairs.pop("region", None))]
        options += [("--profile", self.profile)] + [("-c", f"{k}={v}") for k, v in sorted(pairs.items())]
        given = [f"{option} {shlex.quote(value)}" for option, value in options if value]
        return " ".join(["kit", group, *given, rest])

    def cli_options(self) -> str:
        """``--region`` (and ``--profile``) for an AWS CLI command the kit prints: the CLI otherwise uses its own
        default region and profile, which need not be the ones this command used."""
        return f"--region {self.region}{profile_option(self.profile)}"

    def client(self, name: str) -> Any:
        return client(name, self.region, self.profile)

    def model_client(self, name: str) -> Any:
        return model_client(name, self.region, self.profile)

    def credentials(self) -> Any:
        return credentials(self.region, self.profile)

    def outputs(self, key: str) -> dict[str, str]:
        """The outputs of the level's stack; its errors' deploy and destroy hints name the overrides too."""
        with self._overrides_in_hints(key):
            return stack_outputs(self.stack_name(key), self.region, self.profile)

    def output(self, key: str, output_key: str) -> str:
        outputs = self.outputs(key)  # its errors carry the overrides already
        with self._overrides_in_hints(key):
            return require_output(outputs, output_key, self.stack_name(key))

    @contextlib.contextmanager
    def _overrides_in_hints(self, key: str) -> Iterator[None]:
        """A KitError raised inside, with its hints carrying this command's overrides (``hinted``)."""
        try:
            yield
        except KitError as exc:
            hinted = self.hinted(exc.message, key)
            if hinted == exc.message:
                raise
            raise type(exc)(hinted) from None

    def hinted(self, message: str, key: str) -> str:
        """``message`` with its make deploy / make destroy hints carrying this command's -c, --stage and --region,
        so that following them acts on the stack the command looked for."""
        overrides = self._cdk_args()
        if not overrides:
            return message
        name = self.stack_name(key)
        for verb in ("deploy", "destroy"):
            message = message.replace(deploy_hint(name, verb), f"make {verb} STACK={stack_id(key)} {overrides}")
        return message

    def _overrides(self) -> dict[str, str]:
        """The configuration this command was given: each ``-c key=value``, then --stage and --region (which win)."""
        pairs = dict(self.context)
        if self.stage:
            pairs["stage"] = self.stage
        if self.region_override:
            pairs["region"] = self.region_override
        return pairs

    def _cdk_args(self) -> str:
        pairs = self._overrides()
        if pairs == {"stage": SANDBOX}:
            pairs = {}
        # The command's profile too: without it the CDK CLI signs with its default profile, maybe another account's.
        args = [f"-c {shlex.quote(f'{k}={v}')}" for k, v in sorted(pairs.items())] + (
            [profile_option(self.profile).strip()] if self.profile else []
        )
        if not args:
            return ""
        # The Makefile puts $(CDK_ARGS) into the recipe's shell line as it is, where the shell splits and unquotes
        # it: the value holds each argument quoted, and the assignment is quoted again for the shell it is typed in.
        inner = " ".join(args)
        return f'CDK_ARGS="{inner}"' if not set(inner) & set('"$`\\!') else f"CDK_ARGS={shlex.quote(inner)}"
