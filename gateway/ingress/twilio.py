"""Twilio-shaped ingress: the agent's official Twilio SDK, pointed at the gateway.

`POST /2010-04-01/Accounts/{AccountSid}/Messages.json` and `/Calls.json`, form-encoded,
HTTP Basic auth with a gateway account. Answers use Twilio's JSON shapes and error codes so
the SDK raises the exceptions agents already handle.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from gateway.addresses import e164
from gateway.auth.authenticate import Authenticator
from gateway.auth.credentials import basic_credentials
from gateway.auth.secret_check import account_or_refusal
from gateway.ingress.twiml import TwimlRefused, check_twiml, check_twiml_url
from gateway.model import (
    TWILIO_API_VERSION,
    Account,
    Channel,
    OutboundMessage,
    Purpose,
    Reason,
    TelephonyContent,
)
from gateway.pipeline.process import Outcome, Pipeline, TemporaryFailure
from gateway.rewrite.sms_notice import sms_notice
from gateway.rules.ruleset import RuleSet
from gateway.runtime.clock import Clock
from gateway.runtime.ids import unique_hex
from gateway.runtime.input_limits import line_break_in

MAX_BODY_CHARS = 1600
MAX_FORM_BYTES = 64 * 1024
WINDOW_CODES = frozenset({"QUIET_HOURS", "RESTRICTED_DAY", "TIMEZONE_UNKNOWN"})
# Twilio error codes the gateway answers with, by what went wrong.
BAD_CREDENTIALS = 20003
TOO_MANY_REQUESTS = 20429
NOT_FOUND = 20404
SERVICE_UNAVAILABLE = 20503
OPTED_OUT = 21610
INVALID_TO = 21211
CALLING_WINDOW = 30610
MESSAGE_FILTERED = 30007
BODY_TOO_LONG = 21617


def twilio_error(status: int, code: int, message: str) -> web.Response:
    """Twilio's legacy error shape, which the SDK turns into TwilioRestException."""
    return web.json_response(
        {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        },
        status=status,
    )


def block_error_code(codes: list[str]) -> int:
    if "SUPPRESSED" in codes:
        return OPTED_OUT
    if "INVALID_RECIPIENT" in codes:
        return INVALID_TO
    if WINDOW_CODES.intersection(codes):
        return CALLING_WINDOW
    return MESSAGE_FILTERED


@dataclass(frozen=True)
class FormProblem(Exception):
    """A request Twilio itself would refuse: its error code and message."""

    code: int
    message: str


REQUIRED = {
    Channel.SMS: [
        (("To",), 21604, "A 'To' phone number is required."),
        (("From", "MessagingServiceSid"), 21603, "A 'From' phone number is required."),
        (("Body", "MediaUrl", "ContentSid"), 21602, "Message body is required."),
    ],
    Channel.CALL: [
        (("To",), 21201, "No 'To' number is specified"),
        (("From",), 21213, "No 'From' number is specified"),
        (("Url", "Twiml", "ApplicationSid"), 21205, "Url parameter is required."),
    ],
}


# Parameters forwarded to Twilio; anything else is refused rather than passed through, so an
# agent cannot schedule a send past the window (SendAt), add a recipient (a lowercase "to"),
# or change what was checked. Names are case-sensitive, as in Twilio's API.
ACCEPTED = {
    Channel.SMS: frozenset({
        "To", "From", "MessagingServiceSid", "Body", "MediaUrl", "StatusCallback",
        "ContentSid", "ContentVariables", "SmartEncoded", "ShortenUrls", "MaxPrice",
        "ProvideFeedback", "Attempt",
    }),
    Channel.CALL: frozenset({
        "To", "From", "Url", "Method", "Twiml", "ApplicationSid", "StatusCallback",
        "StatusCallbackMethod", "StatusCallbackEvent", "FallbackUrl", "FallbackMethod",
        "Timeout", "Record", "RecordingChannels", "RecordingStatusCallback",
        "RecordingStatusCallbackMethod", "RecordingStatusCallbackEvent", "MachineDetection",
        "MachineDetectionTimeout", "AsyncAmd", "AsyncAmdStatusCallback",
        "AsyncAmdStatusCallbackMethod", "TimeLimit", "Trim", "SendDigits", "CallerId",
    }),
}
SCHEDULING = frozenset({"SendAt", "ScheduleType"})
# The only parameters whose values may span lines; a line break (any of them: CR, LF, VT,
# FF, NEL, U+2028...) anywhere else is a number, URL or id that Twilio would refuse, or an
# attempt to smuggle something past the check.
MULTILINE = frozenset({"Body", "Twiml", "ContentVariables"})
# The only parameters Twilio takes more than once.
REPEATABLE = frozenset({"MediaUrl", "StatusCallbackEvent", "RecordingStatusCallbackEvent"})
INVALID_NUMBER = {"To": 21211, "From": 21212}
# Call parameters naming TwiML the gateway cannot read when it forwards the call.
TWIML_URLS = ("Url", "FallbackUrl")


def check_form(
    channel: Channel,
    form: list[tuple[str, str]],
    notice: str | None,
    twiml_hosts: frozenset[str] = frozenset(),
) -> None:
    names = {name for name, _ in form}
    if names & SCHEDULING:
        raise FormProblem(
            20001, "Scheduled sends (SendAt, ScheduleType) are not accepted: the calling rules "
            "are decided when the gateway forwards the message; send it at that time instead.",
        )
    unknown = sorted(names - ACCEPTED[channel])
    if unknown:
        raise FormProblem(20001, f"Parameters not accepted by the gateway: {', '.join(unknown)}")
    broken = sorted({k for k, v in form if k not in MULTILINE and line_break_in(v)})
    if broken:
        raise FormProblem(
            next((INVALID_NUMBER[k] for k in broken if k in INVALID_NUMBER), 20001),
            f"Parameters with a line break are not accepted: {', '.join(broken)}",
        )
    repeated = sorted(
        k for k, count in Counter(k for k, _ in form).items()
        if count > 1 and k not in REPEATABLE
    )
    if repeated:
        raise FormProblem(
            20001, f"Parameters given more than once: {', '.join(repeated)} (the gateway "
            "would check one value and the provider might use another).",
        )
    if channel is Channel.CALL:
        check_call_instructions(form, twiml_hosts)
    if notice and any(k == "ContentSid" for k, _ in form):
        raise FormProblem(
            20001, "A marketing text must carry the opt-out notice, which cannot be added to "
            "a ContentSid template: send the text as Body.",
        )
    present = {name for name, value in form if value.strip()}
    for names, code, message in REQUIRED[channel]:
        if not present.intersection(names):
            raise FormProblem(code, message)
    if channel is Channel.SMS:
        body = next((v for k, v in form if k == "Body"), "")
        room = MAX_BODY_CHARS - (len(notice) + 1 if notice else 0)
        if len(body) > room:
            extra = " with the required opt-out notice" if notice else ""
            raise FormProblem(
                BODY_TOO_LONG,
                f"The concatenated message body{extra} exceeds the {MAX_BODY_CHARS} character "
                f"limit (body is {len(body)} characters; at most {room} allowed).",
            )


def check_call_instructions(form: list[tuple[str, str]], twiml_hosts: frozenset[str]) -> None:
    """What the call will do must be what the gateway checked: inline `Twiml` made only of
    verbs that neither connect the call elsewhere nor fetch more TwiML (ingress/twiml.py),
    `Url`/`FallbackUrl` only on the operator's `[twilio] twiml_hosts`, no `ApplicationSid`."""
    for name, value in form:
        if not value.strip():
            continue
        try:
            if name == "Twiml":
                check_twiml(value)
            elif name in TWIML_URLS:
                check_twiml_url(name, value, twiml_hosts)
        except TwimlRefused as refused:
            raise FormProblem(20001, str(refused)) from None
        if name == "ApplicationSid":
            raise FormProblem(
                20001, "ApplicationSid is not accepted: the application's Voice URL is set "
                "at Twilio, outside the gateway, and returns TwiML the gateway cannot see "
                "(it may dial anyone at any hour). Send the call's Twiml, or a Url on a host "
                "in [twilio] twiml_hosts.",
            )


def _credentials_refused(status: int, why: str) -> web.Response:
    if status == 429:
        return twilio_error(status, TOO_MANY_REQUESTS, f"Too Many Requests: {why}")
    return twilio_error(status, SERVICE_UNAVAILABLE, f"Service Unavailable: {why}")


class TwilioRoutes:
    def __init__(
        self,
        pipeline: Pipeline,
        accounts: Callable[[], tuple[Account, ...]],
        account_sid: str,
        rules: Callable[[], RuleSet],
        clock: Clock,
        authenticator: Authenticator,
        twiml_hosts: frozenset[str] = frozenset(),
    ) -> None:
        self.pipeline = pipeline
        self.twiml_hosts = twiml_hosts
        self.accounts = accounts
        self.account_sid = account_sid
        self.rules = rules
        self.clock = clock
        self.authenticator = authenticator

    def register(self, app: web.Application) -> None:
        base = f"/{TWILIO_API_VERSION}/Accounts/{{account_sid}}"
        app.router.add_post(f"{base}/Messages.json", self.messages)
        app.router.add_post(f"{base}/Calls.json", self.calls)

    async def messages(self, request: web.Request) -> web.Response:
        return await self._submit(request, Channel.SMS)

    async def calls(self, request: web.Request) -> web.Response:
        return await self._submit(request, Channel.CALL)

    async def _account(self, request: web.Request) -> Account | web.Response | None:
        """User is the account name, or the AccountSid as Twilio's SDK sends it."""
        user, password = basic_credentials(request.headers.get("Authorization", "")) or ("", "")
        return await account_or_refusal(
            self.authenticator, request, "twilio", _credentials_refused, password,
            login=user, name_ok=lambda a: user in (a.name, self.account_sid),
        )

    async def _submit(self, request: web.Request, channel: Channel) -> web.Response:
        account = await self._account(request)
        if isinstance(account, web.Response):
            return account
        if account is None:
            return twilio_error(401, BAD_CREDENTIALS, "Authentication Error - invalid username")
        if request.match_info["account_sid"] != self.account_sid:
            return twilio_error(
                404, NOT_FOUND,
                f"The requested resource {request.path} was not found",
            )
        if (request.content_length or 0) > MAX_FORM_BYTES:
            return twilio_error(413, 20001, f"Request body over {MAX_FORM_BYTES} bytes")
        try:
            posted = await request.post()
        except ValueError as exc:
            return twilio_error(400, 20001, f"Malformed form body: {exc}")
        except web.HTTPRequestEntityTooLarge:
            return twilio_error(413, 20001, f"Request body over {MAX_FORM_BYTES} bytes")
        form = [(k, v) for k, v in posted.items() if isinstance(v, str)]
        message = self._message(account, channel, form)
        notice = None
        if channel is Channel.SMS and account.purpose is Purpose.MARKETING:
            notice = sms_notice(self.rules(), account.identity)
        try:
            check_form(channel, form, notice, self.twiml_hosts)
        except FormProblem as problem:
            try:
                await self.pipeline.reject(
                    message, Reason("MESSAGE_MALFORMED", problem.message, "twilio.request")
                )
            except TemporaryFailure as exc:
                return twilio_error(503, SERVICE_UNAVAILABLE, f"{exc.reason}: {exc.text}")
            return twilio_error(400, problem.code, problem.message)
        try:
            outcome = await self.pipeline.process(message)
        except TemporaryFailure as exc:
            return twilio_error(503, SERVICE_UNAVAILABLE, f"{exc.reason}: {exc.text}")
        return self._answer(outcome)

    def _message(
        self, account: Account, channel: Channel, form: list[tuple[str, str]]
    ) -> OutboundMessage:
        fields = dict(form)
        to = e164(fields.get("To", ""))
        return OutboundMessage(
            id=unique_hex(),
            channel=channel,
            ingress="twilio",
            account=account,
            envelope_sender=fields.get("From", fields.get("MessagingServiceSid", "")),
            recipients=(to,) if to else (),
            received_at=self.clock.now(),
            telephony=TelephonyContent(
                from_number=fields.get("From", ""),
                body=fields.get("Body", ""),
                form=tuple(form),
            ),
        )

    def _answer(self, outcome: Outcome) -> web.Response:
        if outcome.delivered:
            receipt = outcome.delivered[0].receipt
            return web.json_response(dict(receipt.document or {"sid": receipt.upstream_id}),
                                     status=201)
        if outcome.refused:
            error = outcome.refused[0].error
            if error.document is not None and error.status is not None:
                return web.json_response(error.document, status=error.status)
            return twilio_error(400, error.code, error.text)
        reasons = outcome.decision.all_reasons()
        codes = list(dict.fromkeys(r.code for r in reasons))
        text = "; ".join(f"{r.code}: {r.message}" for r in reasons)
        return twilio_error(400, block_error_code(codes), f"{','.join(codes)} - {text}")

