"""Presentation context and SCP/SCU role negotiation (PS3.8 9.3.2-9.3.3,
PS3.7 D.3.3.4), for either side of an association, sans-I/O.

* :func:`negotiate_as_requestor`: from the A-ASSOCIATE-RQ we sent and the
  A-ASSOCIATE-AC we got, the contexts we may use (with their one transfer
  syntax and our roles) and those the peer refused (with the reason).
* :func:`negotiate_as_acceptor`: from an A-ASSOCIATE-RQ and what we support,
  the results and role selection answers to send back; :func:`accept` wraps
  them in the A-ASSOCIATE-AC.

Roles (PS3.7 D.3.3.4): a role selection item names the requestor's roles for a
SOP class. An acceptor may grant a role only if it was proposed; one that does
not answer leaves the default (requestor SCU, acceptor SCP). A context whose
negotiated roles are neither SCU nor SCP cannot be used: it counts as refused
(user rejection).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from dicomtrolley.formats.association import (
    ABSTRACT_SYNTAX_NOT_SUPPORTED,
    ACCEPTANCE,
    NO_REASON,
    RESULT_TEXT,
    TRANSFER_SYNTAXES_NOT_SUPPORTED,
    USER_REJECTION,
    AssociateAC,
    AssociateRQ,
    AsyncOperationsWindow,
    ContextResult,
    RoleSelection,
    UserIdentityResponse,
    UserInformation,
)
from dicomtrolley.formats.dul import DULProtocolError


@dataclass(frozen=True, slots=True)
class AcceptedContext:
    """A presentation context both sides agreed on.

    ``as_scu`` / ``as_scp``: whether the side that negotiated (we) may act as
    SCU / SCP of the abstract syntax on it.
    """

    context_id: int
    abstract_syntax: str
    transfer_syntax: str
    as_scu: bool
    as_scp: bool


@dataclass(frozen=True, slots=True)
class RefusedContext:
    """A proposed presentation context that cannot be used, and why."""

    context_id: int
    abstract_syntax: str
    reason: int
    detail: str = ""

    def describe(self) -> str:
        text = self.detail or RESULT_TEXT.get(self.reason, f"reason {self.reason}")
        return f"context {self.context_id} ({self.abstract_syntax}): {text}"


@dataclass(frozen=True, slots=True)
class RequestorNegotiation:
    """What an A-ASSOCIATE-AC gives the requestor.

    ``accepted`` is by context ID, in the order proposed; ``maximum_length`` is
    the peer's Maximum Length Received (0: no limit, or not sent).
    """

    accepted: Mapping[int, AcceptedContext]
    refused: tuple[RefusedContext, ...]
    maximum_length: int

    def context_for(self, abstract_syntax: str) -> AcceptedContext | None:
        """The first accepted context for abstract_syntax."""
        for context in self.accepted.values():
            if context.abstract_syntax == abstract_syntax:
                return context
        return None


@dataclass(frozen=True, slots=True)
class AcceptorNegotiation:
    """What the acceptor answers to an A-ASSOCIATE-RQ, and what it may use.

    ``results`` (one per proposed context, in the order proposed) and ``roles``
    go into the A-ASSOCIATE-AC (see :func:`accept`); ``accepted`` holds our
    roles as acceptor, by context ID; ``refused`` the rest.
    """

    results: tuple[ContextResult, ...]
    roles: tuple[RoleSelection, ...]
    accepted: Mapping[int, AcceptedContext]
    refused: tuple[RefusedContext, ...]


def negotiate_as_requestor(
    request: AssociateRQ, answer: AssociateAC
) -> RequestorNegotiation:
    """The contexts of request the peer's answer lets us use, and those it refused.

    Raises :class:`~dicomtrolley.formats.dul.DULProtocolError` when the peer
    answers a context twice or accepts one with a transfer syntax we did not
    propose (no data could be read safely on it). Results for context IDs we
    did not propose are ignored; a proposed context without a result counts as
    refused (no reason).
    """
    results: dict[int, ContextResult] = {}
    for answered in answer.results:
        if answered.context_id in results:
            raise DULProtocolError(
                f"the A-ASSOCIATE-AC answers presentation context "
                f"{answered.context_id} twice"
            )
        results[answered.context_id] = answered
    ours = request.user_information
    theirs = answer.user_information
    accepted: dict[int, AcceptedContext] = {}
    refused: list[RefusedContext] = []
    for context in request.presentation_contexts:
        cid, abstract = context.context_id, context.abstract_syntax
        result = results.get(cid)
        if result is None:
            refused.append(RefusedContext(cid, abstract, NO_REASON, "not answered"))
            continue
        if not result.accepted:
            refused.append(RefusedContext(cid, abstract, result.result))
            continue
        if result.transfer_syntax not in context.transfer_syntaxes:
            raise DULProtocolError(
                f"the peer accepted presentation context {cid} ({abstract}) with "
                f"transfer syntax {result.transfer_syntax}, which we did not propose"
            )
        proposed, granted = ours.role_for(abstract), theirs.role_for(abstract)
        if proposed is not None and granted is not None:
            as_scu = proposed.scu and granted.scu
            as_scp = proposed.scp and granted.scp
        else:
            as_scu, as_scp = True, False
        if not (as_scu or as_scp):
            refused.append(
                RefusedContext(
                    cid, abstract, USER_REJECTION, "the peer granted neither role"
                )
            )
            continue
        accepted[cid] = AcceptedContext(
            cid, abstract, result.transfer_syntax, as_scu, as_scp
        )
    return RequestorNegotiation(accepted, tuple(refused), theirs.maximum_length or 0)


def negotiate_as_acceptor(
    request: AssociateRQ,
    supported: Mapping[str, Sequence[str]],
    roles: Iterable[RoleSelection] = (),
) -> AcceptorNegotiation:
    """Our answer to each context of request.

    Parameters
    ----------
    supported:
        Abstract syntax -> the transfer syntaxes we take for it, in our order of
        preference: each context gets the first of ours the requestor offered.
    roles:
        For each SOP class, the roles we let the requestor take (a
        :class:`RoleSelection` names the requestor's roles). A proposal for a
        class not listed gets no answer: the default roles apply (requestor
        SCU, we SCP). Roles granted are those both proposed and allowed.
    """
    allowed: dict[str, RoleSelection] = {}
    for role in roles:
        allowed.setdefault(role.sop_class_uid, role)
    results: list[ContextResult] = []
    replies: dict[str, RoleSelection] = {}
    accepted: dict[int, AcceptedContext] = {}
    refused: list[RefusedContext] = []
    for context in request.presentation_contexts:
        cid, abstract = context.context_id, context.abstract_syntax
        first_offered = (
            context.transfer_syntaxes[0] if context.transfer_syntaxes else ""
        )
        ours = supported.get(abstract)
        chosen = next(
            (ts for ts in ours or () if ts in context.transfer_syntaxes), None
        )
        granted = _grant(
            request.user_information.role_for(abstract), allowed.get(abstract)
        )
        if ours is None:
            reason = ABSTRACT_SYNTAX_NOT_SUPPORTED
        elif chosen is None:
            reason = TRANSFER_SYNTAXES_NOT_SUPPORTED
        elif granted is not None and not (granted.scu or granted.scp):
            reason = USER_REJECTION
        else:
            reason = ACCEPTANCE
        if reason != ACCEPTANCE or chosen is None:
            results.append(ContextResult(cid, reason, first_offered))
            refused.append(RefusedContext(cid, abstract, reason))
            continue
        results.append(ContextResult(cid, ACCEPTANCE, chosen))
        if granted is None:  # default roles: the requestor is the SCU
            as_scu, as_scp = False, True
        else:
            replies.setdefault(abstract, granted)
            as_scu, as_scp = granted.scp, granted.scu
        accepted[cid] = AcceptedContext(cid, abstract, chosen, as_scu, as_scp)
    return AcceptorNegotiation(
        tuple(results), tuple(replies.values()), accepted, tuple(refused)
    )


def _grant(
    proposed: RoleSelection | None, allowed: RoleSelection | None
) -> RoleSelection | None:
    """The roles granted to the requestor, or None to leave the default."""
    if proposed is None or allowed is None:
        return None
    return RoleSelection(
        proposed.sop_class_uid,
        proposed.scu and allowed.scu,
        proposed.scp and allowed.scp,
    )


def accept(
    request: AssociateRQ,
    negotiation: AcceptorNegotiation,
    *,
    maximum_length: int,
    implementation_class_uid: str,
    implementation_version_name: str | None = None,
    async_window: AsyncOperationsWindow | None = None,
    identity_response: UserIdentityResponse | None = None,
) -> AssociateAC:
    """The A-ASSOCIATE-AC for request, carrying negotiation's answers.

    The AE title fields repeat the request's (PS3.8 9.3.3). Pass
    ``identity_response`` only when the requestor asked for a positive
    response to its user identity (PS3.7 D.3.3.7.2).
    """
    return AssociateAC(
        request.called_ae_title,
        request.calling_ae_title,
        negotiation.results,
        UserInformation(
            maximum_length=maximum_length,
            implementation_class_uid=implementation_class_uid,
            implementation_version_name=implementation_version_name,
            async_window=async_window,
            roles=negotiation.roles,
            identity_response=identity_response,
        ),
        request.application_context_name,
    )
