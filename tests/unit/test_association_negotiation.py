"""Presentation context and role negotiation (dicomtrolley.formats.negotiation),
checked on value objects and, on bytes, against pynetdicom's acceptor."""

from __future__ import annotations

import pytest
from pynetdicom import pdu as pynetdicom_pdu
from pynetdicom.presentation import build_context, negotiate_as_acceptor

from dicomtrolley.formats import association as a
from dicomtrolley.formats import dul
from dicomtrolley.formats.negotiation import (
    AcceptedContext,
    RefusedContext,
    accept,
    negotiate_as_requestor,
)
from dicomtrolley.formats.negotiation import (
    negotiate_as_acceptor as ours_as_acceptor,
)

VERIFICATION = "1.2.840.10008.1.1"
CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
GET = "1.2.840.10008.5.1.4.1.2.2.3"
IMPLICIT = "1.2.840.10008.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"
JPEG2000 = "1.2.840.10008.1.2.4.91"


def request(*roles: a.RoleSelection) -> a.AssociateRQ:
    return a.AssociateRQ(
        "PACS",
        "ME",
        a.presentation_contexts(
            [
                (GET, [EXPLICIT, IMPLICIT]),  # 1
                (CT, [JPEG2000, EXPLICIT, IMPLICIT]),  # 3
                (MR, [JPEG2000]),  # 5
                (VERIFICATION, [IMPLICIT]),  # 7
            ]
        ),
        a.UserInformation(16384, "1.2.3", roles=roles),
    )


SUPPORTED = {
    GET: [IMPLICIT, EXPLICIT],
    CT: [EXPLICIT, IMPLICIT],
    MR: [EXPLICIT, IMPLICIT],
}


def test_acceptor_picks_our_preferred_syntax_and_says_why_it_refuses() -> None:
    answer = ours_as_acceptor(request(), SUPPORTED)
    assert answer.results == (
        a.ContextResult(1, a.ACCEPTANCE, IMPLICIT),
        a.ContextResult(3, a.ACCEPTANCE, EXPLICIT),
        a.ContextResult(5, a.TRANSFER_SYNTAXES_NOT_SUPPORTED, JPEG2000),
        a.ContextResult(7, a.ABSTRACT_SYNTAX_NOT_SUPPORTED, IMPLICIT),
    )
    assert answer.roles == ()
    assert answer.accepted[3] == AcceptedContext(3, CT, EXPLICIT, False, True)
    assert [r.context_id for r in answer.refused] == [5, 7]
    assert answer.refused[1].describe() == (
        f"context 7 ({VERIFICATION}): abstract syntax not supported"
    )


def test_requestor_reads_what_the_acceptor_decided() -> None:
    rq = request()
    ac = accept(
        rq,
        ours_as_acceptor(rq, SUPPORTED),
        maximum_length=32768,
        implementation_class_uid="1.2.4",
    )
    assert (ac.called_ae_title, ac.calling_ae_title) == ("PACS", "ME")
    # through bytes, as on the wire
    result = negotiate_as_requestor(
        a.AssociateRQ.decode(rq.encode()), a.AssociateAC.decode(ac.encode())
    )
    assert list(result.accepted) == [1, 3]
    assert result.accepted[1] == AcceptedContext(1, GET, IMPLICIT, True, False)
    assert result.context_for(CT) == AcceptedContext(3, CT, EXPLICIT, True, False)
    assert result.context_for(MR) is None
    assert result.refused == (
        RefusedContext(5, MR, a.TRANSFER_SYNTAXES_NOT_SUPPORTED),
        RefusedContext(7, VERIFICATION, a.ABSTRACT_SYNTAX_NOT_SUPPORTED),
    )
    assert result.maximum_length == 32768


# (proposed by the requestor, allowed by the acceptor) -> the requestor's roles,
# None: context refused; the acceptor's roles are the other way round.
ROLE_CASES = [
    ((False, True), (True, True), (False, True)),  # C-GET storage: we are SCP
    ((True, True), (True, True), (True, True)),
    ((True, True), (False, True), (False, True)),
    ((True, True), (True, False), (True, False)),
    ((True, False), (False, True), None),  # nothing in common
    ((False, True), (True, False), None),
    ((True, True), (False, False), None),
]


@pytest.mark.parametrize("proposed, allowed, negotiated", ROLE_CASES)
def test_roles_are_those_both_sides_allow(
    proposed: tuple[bool, bool],
    allowed: tuple[bool, bool],
    negotiated: tuple[bool, bool] | None,
) -> None:
    rq = request(a.RoleSelection(CT, *proposed))
    answer = ours_as_acceptor(rq, SUPPORTED, [a.RoleSelection(CT, *allowed)])
    ac = accept(rq, answer, maximum_length=0, implementation_class_uid="1.2.4")
    ours = negotiate_as_requestor(rq, ac)
    if negotiated is None:
        assert 3 not in answer.accepted and 3 not in ours.accepted
        assert answer.results[1].result == a.USER_REJECTION
        assert ac.user_information.roles == ()
        return
    assert ac.user_information.roles == (a.RoleSelection(CT, *negotiated),)
    scu, scp = negotiated
    assert (ours.accepted[3].as_scu, ours.accepted[3].as_scp) == (scu, scp)
    assert (answer.accepted[3].as_scu, answer.accepted[3].as_scp) == (scp, scu)


def test_without_a_role_answer_the_default_roles_apply() -> None:
    rq = request(a.RoleSelection(CT, False, True))
    answer = ours_as_acceptor(rq, SUPPORTED)  # no role policy: no answer
    assert answer.roles == ()
    ac = accept(rq, answer, maximum_length=0, implementation_class_uid="1.2.4")
    context = negotiate_as_requestor(rq, ac).accepted[3]
    assert (context.as_scu, context.as_scp) == (True, False)


def test_requestor_refuses_a_context_when_the_peer_grants_no_role() -> None:
    rq = request(a.RoleSelection(CT, False, True))
    ac = a.AssociateAC(
        "PACS",
        "ME",
        (a.ContextResult(3, 0, EXPLICIT),),
        a.UserInformation(roles=(a.RoleSelection(CT, True, False),)),
    )
    result = negotiate_as_requestor(rq, ac)
    assert result.accepted == {}
    assert result.refused[1] == RefusedContext(
        3, CT, a.USER_REJECTION, "the peer granted neither role"
    )
    assert result.refused[0] == RefusedContext(1, GET, a.NO_REASON, "not answered")
    assert result.maximum_length == 0


def test_requestor_refuses_answers_that_break_the_protocol() -> None:
    rq = request()
    foreign = a.AssociateAC("PACS", "ME", (a.ContextResult(3, 0, "1.2.3.4"),))
    with pytest.raises(
        dul.DULProtocolError, match=f"3 \\({CT}\\) with transfer syntax"
    ):
        negotiate_as_requestor(rq, foreign)
    twice = a.AssociateAC(
        "PACS", "ME", (a.ContextResult(3, 0, EXPLICIT), a.ContextResult(3, 3, ""))
    )
    with pytest.raises(dul.DULProtocolError, match="context 3 twice"):
        negotiate_as_requestor(rq, twice)
    stray = a.AssociateAC("PACS", "ME", (a.ContextResult(9, 0, EXPLICIT),))
    assert negotiate_as_requestor(rq, stray).accepted == {}


def test_pynetdicom_acceptor_agrees_with_ours() -> None:
    """pynetdicom negotiates the same results for the same proposal."""
    rq = request()
    supported = []
    for abstract, syntaxes in SUPPORTED.items():
        context = build_context(abstract, syntaxes)
        supported.append(context)
    theirs, _ = negotiate_as_acceptor(
        pynetdicom_rq_contexts(rq.encode()), supported, None
    )
    ours = ours_as_acceptor(rq, SUPPORTED)
    assert [(c.context_id, c.result) for c in theirs] == [
        (r.context_id, r.result) for r in ours.results
    ]
    accepted = [c for c in theirs if c.result == 0]
    assert [str(c.transfer_syntax[0]) for c in accepted] == [
        ours.accepted[c.context_id].transfer_syntax for c in accepted
    ]


def pynetdicom_rq_contexts(raw: bytes) -> list[object]:
    pdu = pynetdicom_pdu.A_ASSOCIATE_RQ()
    pdu.decode(raw)
    return list(pdu.to_primitive().presentation_context_definition_list)
