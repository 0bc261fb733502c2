"""Who the token belongs to, and whether it may write to a repo, asked before anything is
written (huggingface_hub's `whoami`): a rejected token (401), a read-only token and a namespace
that is neither the user's nor one of their organisations (one where their role is more than
read) are refused in one line.

Only what whoami states plainly is judged: a fine-grained token's permissions are per repo, so
for it (and for OAuth tokens, which carry no role) the namespace is the one check; the Hub
itself refuses the rest when the push is sent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from medsynth_kohya import __version__
from medsynth_kohya.errors import UserError
from medsynth_kohya.hub.contents import scrub
from medsynth_kohya.hub.failures import (
    answered_otherwise,
    http_status,
    hub_error,
    login,
    refused_on_the_way,
)

if TYPE_CHECKING:
    from huggingface_hub import HfApi

CHECKING = "the check of the token"
"""What a failed whoami was doing, in hub_error's message."""


class UnreadableToken(UserError):
    """The Hub library could not read the token a push would send (HF_OIDC_RESOURCE without
    an id token to exchange, a token file it may not read): why, and what to do."""

    def __init__(self, reason: str, fix: str) -> None:
        super().__init__(f"the Hub token cannot be read: {reason}; {fix}")
        self.reason, self.fix = reason, fix


def read_token() -> str | None:
    """The token push sends, read as huggingface_hub reads it (HF_OIDC_RESOURCE's exchange,
    else HF_TOKEN, else a stored login); None where there is none."""
    import os

    from huggingface_hub import get_token

    try:
        return get_token()
    except Exception as exc:  # an OIDC exchange, an unreadable token file: any kind it raises
        fix = ("unset HF_OIDC_RESOURCE (or set HF_OIDC_ID_TOKEN)"
               if os.environ.get("HF_OIDC_RESOURCE") else "hf auth login, or export HF_TOKEN")
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UnreadableToken(reason.rstrip("."), fix) from None


class Unanswered(UserError):
    """The Hub could not be asked (lost connection, server error, rate limit): no verdict on
    the token, so a dry run can go on without one."""


def hub_api(endpoint: str, token: str) -> HfApi:
    """The client every push and pre-flight call goes through, with the tool's user agent."""
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint, token=token, library_name="medsynth-kohya",
                 library_version=__version__)


def writer(api: HfApi, repo_id: str, *, option: str = "--repo-id",
           secrets: Sequence[str] = ()) -> str:
    """The user name the token of `api` belongs to, once the Hub says it may write to
    `repo_id`'s namespace; else a one-line UserError (Unanswered when the Hub gave no verdict).
    `option` is the one the user named the repository by."""
    try:
        info = api.whoami()
    except Exception as exc:
        message = hub_error(exc, repo_id, api.endpoint, during=CHECKING, option=option)
        if message is None:
            raise
        refused = http_status(exc) in (401, 403) and refused_on_the_way(exc) is None
        kind = UserError if refused else Unanswered
        raise kind(scrub(message.encode(), secrets).decode()) from None
    if not isinstance(info, Mapping):  # JSON, but not the account the Hub describes
        raise Unanswered(answered_otherwise(api.endpoint, CHECKING, option))
    problem = refusal(info, repo_id, api.endpoint, option)
    if problem is not None:
        raise UserError(problem)
    return str(info.get("name") or "")


def refusal(info: Mapping[str, Any], repo_id: str, endpoint: str, option: str) -> str | None:
    """Why whoami's answer `info` rules out a push to `repo_id`, or None: a token whose role is
    read, or a namespace that is neither the account's name nor one of its organisations in
    which its role is more than read (compared without case, as the Hub resolves names)."""
    user = str(info.get("name") or "")
    auth = info.get("auth")
    token = auth.get("accessToken") if isinstance(auth, Mapping) else None
    if isinstance(token, Mapping) and token.get("role") == "read":
        return (f"the token of {user} at {endpoint} is read-only: a push needs one with the "
                f"write role ({endpoint}/settings/tokens); set HF_TOKEN to it or run "
                f"{login(endpoint)}")
    roles = {str(org.get("name")): org.get("roleInOrg") for org in info.get("orgs") or ()
             if isinstance(org, Mapping) and org.get("name")}
    orgs = [org for org, role in roles.items() if role != "read"]
    namespace, name = repo_id.split("/")
    if not user or namespace.casefold() in {n.casefold() for n in (user, *orgs)}:
        return None
    theirs = f" or an organisation of theirs ({', '.join(orgs)})" if orgs else ""
    if namespace.casefold() in {org.casefold() for org in roles}:
        return (f"{option} {repo_id}: the token belongs to {user}, whose role in {namespace} at "
                f"{endpoint} is read; push to {user}/{name}{theirs}, or ask an admin of "
                f"{namespace} for the write role")
    return (f"{option} {repo_id}: the token belongs to {user}, who cannot write to "
            f"{namespace} at {endpoint}; push to {user}/{name}{theirs}, or use a token of an "
            f"account that can write to {namespace}")
