"""A REST API with the kit's defaults: regional, IAM auth, validated requests, throttled, logged, traced.

Every error API Gateway itself returns is rewritten into the kit's error shape
``{"error": {"code", "message", "field"?}}`` so a caller sees one contract whether the gateway or the
function answered. Gateway response templates are not VTL (only plain substitution), so they use only
``$context.error.messageString``, which API Gateway emits already quoted, never a raw string, or a fixed
message where the kit knows the reason and API Gateway's message does not give it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import jsii
from aws_cdk import Duration, IStableStringProducer, Lazy
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from stacks.shared.deployment import Deployment
from stacks.shared.nag import suppress
from stacks.shared.stage import log_group

STAGE_NAME = "v1"
# The Lambda timeout of the functions behind the kit's APIs: under API Gateway's 29 s integration timeout
# (common/http.py GATEWAY_TIMEOUT_MS), within which the functions answer by their own deadline.
API_FUNCTION_TIMEOUT = Duration.seconds(25)
# The gateway checks that a body is a JSON object; each function checks every field against its
# request_schemas.json, so that every 400 names the field and the reason (API Gateway's own validation
# messages cannot name a field, and gateway response templates cannot escape them).
JSON_OBJECT_BODY = apigw.JsonSchema(schema=apigw.JsonSchemaVersion.DRAFT4, type=apigw.JsonSchemaType.OBJECT)

MISSING_SIGNATURE_OR_ROUTE = "missing_signature_or_route"
# (response type, status or None to keep API Gateway's, error code, field) for the gateway's own errors.
_GATEWAY_ERRORS: tuple[tuple[apigw.ResponseType, str | None, str, str | None], ...] = (
    (apigw.ResponseType.BAD_REQUEST_BODY, "400", "invalid_request_body", "body"),
    (apigw.ResponseType.BAD_REQUEST_PARAMETERS, "400", "invalid_request_parameters", "path"),
    (apigw.ResponseType.REQUEST_TOO_LARGE, "413", "request_too_large", "body"),
    (apigw.ResponseType.UNSUPPORTED_MEDIA_TYPE, "415", "unsupported_media_type", "Content-Type"),
    (apigw.ResponseType.ACCESS_DENIED, "403", "access_denied", None),
    (apigw.ResponseType.MISSING_AUTHENTICATION_TOKEN, "403", MISSING_SIGNATURE_OR_ROUTE, None),
    (apigw.ResponseType.INVALID_SIGNATURE, "403", "invalid_signature", None),
    (apigw.ResponseType.EXPIRED_TOKEN, "403", "expired_credentials", None),
    (apigw.ResponseType.THROTTLED, "429", "throttled", None),
    (apigw.ResponseType.QUOTA_EXCEEDED, "429", "quota_exceeded", None),
    (apigw.ResponseType.INTEGRATION_TIMEOUT, "504", "integration_timeout", None),
    (apigw.ResponseType.DEFAULT_4_XX, None, "request_error", None),
    (apigw.ResponseType.DEFAULT_5_XX, None, "gateway_error", None),
)
_RETRY_AFTER_SECONDS = "1"
# Fixed messages by error code, where messageString names no reason. BAD_REQUEST_BODY's is only "Invalid request
# body", and the kit's one body model (JSON_OBJECT_BODY, content type application/json) checks nothing but "is a
# JSON object", so that is the reason; validation runs only for a content type with a model
# (https://docs.aws.amazon.com/apigateway/latest/developerguide/api-gateway-method-request-validation.html,
# https://docs.aws.amazon.com/apigateway/latest/developerguide/supported-gateway-response-types.html).
_FIXED_MESSAGES = {
    "invalid_request_body": "The request body must be a JSON object (sent with Content-Type: application/json).",
}
# MISSING_AUTHENTICATION_TOKEN answers an unsigned request and, as well, "the cases when the client attempts to invoke
# an unsupported API method or resource" (supported-gateway-response-types.html): its messageString, "Missing
# Authentication Token", tells a signed caller with a mistyped path the wrong thing. The fixed message names both
# causes and the API's routes.
NO_SUCH_ROUTE = "No such route or method, or the request is not signed with SigV4 (IAM auth). Routes: {routes}."


def error_template(code: str, field: str | None, message_json: str | None = None) -> str:
    """A gateway response body in the kit's error shape; messageString arrives quoted and escaped. ``message_json``
    (a fixed message as a JSON string) takes the place of _FIXED_MESSAGES' and of messageString."""
    fixed = _FIXED_MESSAGES.get(code)
    message = message_json or (json.dumps(fixed) if fixed else "$context.error.messageString")
    members = [f'"code": {json.dumps(code)}', f'"message": {message}']
    if field:
        members.append(f'"field": {json.dumps(field)}')
    return '{"error": {' + ", ".join(members) + "}}"


@jsii.implements(IStableStringProducer)
class _RouteMessage:
    """NO_SUCH_ROUTE as a JSON string, with the routes as they are at synthesis."""

    def __init__(self, routes: list[str]) -> None:
        self._routes = routes

    def produce(self) -> str:
        return json.dumps(NO_SUCH_ROUTE.format(routes=", ".join(self._routes)))


@dataclass(frozen=True)
class ApiThrottle:
    """The stage's throttling: steady requests per second and the burst above it (api_throttle_rate/_burst)."""

    rate: float
    burst: int


class RestApi(Construct):
    """``api`` is the RestApi; ``validator`` validates parameters and bodies; ``access_logs`` its log group."""

    def __init__(
        self, scope: Construct, construct_id: str, *, deployment: Deployment, throttle: ApiThrottle, description: str
    ) -> None:
        super().__init__(scope, construct_id)
        self.routes: list[str] = []  # "<METHOD> <path>" of every method add_lambda_method adds
        self.access_logs = log_group(self, "AccessLogs", deployment)
        self.api = apigw.RestApi(
            self,
            "Api",
            rest_api_name=deployment.resource_name(construct_id.lower()),
            description=description,
            endpoint_types=[apigw.EndpointType.REGIONAL],
            default_method_options=apigw.MethodOptions(authorization_type=apigw.AuthorizationType.IAM),
            # Access and execution logging need the account's API Gateway CloudWatch role: one per account and
            # region, set by GenAiKit-0-ApiGatewayAccount (stacks/level0_account/api_gateway_account.py), never
            # by an API stack.
            cloud_watch_role=False,
            deploy_options=apigw.StageOptions(
                stage_name=STAGE_NAME,
                throttling_rate_limit=throttle.rate,
                throttling_burst_limit=throttle.burst,
                tracing_enabled=True,
                # Per-method (detailed) metrics bill as custom metrics while traffic flows ("Your account is charged
                # for accessing method-level CloudWatch metrics, but not the API-level or stage-level metrics",
                # https://docs.aws.amazon.com/apigateway/latest/developerguide/set-up-stages.html); the kit's API
                # alarms read the API-level ones (ApiName), which API Gateway sends without this.
                metrics_enabled=False,
                logging_level=apigw.MethodLoggingLevel.ERROR,
                data_trace_enabled=False,  # never log request or response bodies
                access_log_destination=apigw.LogGroupLogDestination(self.access_logs),
                access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
                    caller=True,
                    http_method=True,
                    ip=True,
                    protocol=True,
                    request_time=True,
                    resource_path=True,
                    response_length=True,
                    status=True,
                    user=True,
                ),
            ),
        )
        self.validator = self.api.add_request_validator(
            "Validator", validate_request_body=True, validate_request_parameters=True
        )
        for response_type, status, code, field in _GATEWAY_ERRORS:
            headers = {"Content-Type": "'application/json'"}
            if status == "429":
                headers["Retry-After"] = f"'{_RETRY_AFTER_SECONDS}'"
            self.api.add_gateway_response(
                f"{code.title().replace('_', '')}Response",
                type=response_type,
                status_code=status,
                response_headers=headers,
                templates={"application/json": error_template(code, field, self._fixed_message(code))},
            )
        suppress(
            self.api.deployment_stage,
            "AwsSolutions-APIG3",
            "No WAF web ACL by default: every method needs SigV4 (IAM) auth and the stage is throttled, and a "
            "web ACL would add about $5/month plus $1 per rule while the API sits idle.",
        )

    def _fixed_message(self, code: str) -> str | None:
        """The route list's message for MISSING_AUTHENTICATION_TOKEN, made at synthesis, once every method is added."""
        if code != MISSING_SIGNATURE_OR_ROUTE:
            return None
        return Lazy.string(_RouteMessage(self.routes))

    def body_model(self, name: str, schema: apigw.JsonSchema) -> apigw.Model:
        return self.api.add_model(f"{name}Model", content_type="application/json", model_name=name, schema=schema)

    def add_lambda_method(
        self,
        resource: apigw.IResource,
        http_method: str,
        function: lambda_.IFunction,
        *,
        body: apigw.Model | None = None,
        path_parameters: tuple[str, ...] = (),
    ) -> apigw.Method:
        """An IAM-authorized method that proxies to ``function`` with the API's validator."""
        self.routes.append(f"{http_method} {resource.path}")
        method = resource.add_method(
            http_method,
            apigw.LambdaIntegration(function, proxy=True),
            request_validator=self.validator,
            request_models={"application/json": body} if body else None,
            request_parameters={f"method.request.path.{p}": True for p in path_parameters} or None,
        )
        suppress(
            method,
            "AwsSolutions-COG4",
            "The method uses IAM (SigV4) authorization, not a Cognito user pool; callers are IAM principals.",
        )
        return method
