"""TreeNode, PruneStrategy, ExpiringCollection and LastUpdatedOrderedDict (4.1.0 API)."""

from __future__ import annotations

import pytest

from dicomtrolley.datastructures import (
    ExpiringCollection,
    LastUpdatedOrderedDict,
    PruneStrategy,
    TreeNode,
    addr,
)

STUDY, SERIES, SOP = "1.2.3", "1.2.3.4", "1.2.3.4.5"


@pytest.fixture
def tree() -> TreeNode:
    """study1 -> (series1 -> (a, b), series2), study2."""
    return TreeNode.init_from_addresses(
        [
            ("study1", "series1", "a"),
            ("study1", "series1", "b"),
            ("study1", "series2"),
            ("study2",),
        ]
    )


def test_access_creates_nodes_with_data() -> None:
    root = TreeNode()
    root[STUDY][SERIES][SOP].data = "instance"
    assert STUDY in root
    assert root.get_node((STUDY, SERIES, SOP)).data == "instance"
    assert isinstance(root[STUDY], TreeNode)


def test_addr_splits_on_dots() -> None:
    assert addr("a.b.c") == ("a", "b", "c")


def test_overwrite_protection_is_inherited() -> None:
    root = TreeNode(allow_overwrite=False)
    root.add("first", ("a", "b"))
    with pytest.raises(ValueError, match="Overwriting"):
        root.add("second", ("a", "b"))
    root["a"].data = "parent data may be set once"
    assert root.get_node(("a", "b")).data == "first"


def test_leaf_addresses_keep_whole_keys(tree: TreeNode) -> None:
    # 4.1.0 split multi-character keys into single characters here
    assert list(tree.iter_leaf_addresses()) == [
        ("study1", "series1", "a"),
        ("study1", "series1", "b"),
        ("study1", "series2"),
        ("study2",),
    ]


def test_exists_creates_nothing(tree: TreeNode) -> None:
    assert tree.exists(("study1", "series1", "a"))
    assert tree.exists(())
    assert not tree.exists(("study1", "nothing", "deeper"))
    assert "nothing" not in tree["study1"]


def test_get_node_without_create(tree: TreeNode) -> None:
    with pytest.raises(KeyError):
        tree.get_node(("study3",), create=False)
    assert "study3" not in tree


def test_copy_is_deep_for_nodes_shallow_for_data(tree: TreeNode) -> None:
    data = ["shared"]
    tree.add(data, ("study1",))
    copied = tree.copy()
    copied.prune(("study1", "series1"))
    assert tree.exists(("study1", "series1", "a"))
    assert copied.get_node(("study1",)).data is data


def test_pop_address_at_depth(tree: TreeNode) -> None:
    popped = tree.pop_address(("study1", "series1"))
    assert sorted(popped) == ["a", "b"]
    assert not tree.exists(("study1", "series1"))
    with pytest.raises(KeyError):
        tree.pop_address(("study1", "series1"))
    with pytest.raises(KeyError):
        tree.pop_address(())


def test_prune_leaf(tree: TreeNode) -> None:
    with pytest.raises(ValueError, match="not a leaf"):
        tree.prune_leaf(("study1", "series1"))
    with pytest.raises(KeyError):
        tree.prune_leaf(("study9",))
    tree.prune_leaf(("study1", "series1", "a"))
    assert not tree.exists(("study1", "series1", "a"))
    assert tree.get_node(("study1", "series2")).is_leaf()


def test_prune_all_force(tree: TreeNode) -> None:
    tree.prune_all([("study1", "series1"), ("nothing",)], PruneStrategy.FORCE)
    assert list(tree.iter_leaf_addresses()) == [("study1", "series2"), ("study2",)]


def test_prune_all_where_possible(tree: TreeNode) -> None:
    tree.prune_all([("study1", "series1"), ("study1", "series2")])
    assert tree.exists(("study1", "series1", "a"))
    assert not tree.exists(("study1", "series2"))


def test_prune_all_check_first_is_all_or_nothing(tree: TreeNode) -> None:
    asked = [("study1", "series1"), ("study2",)]
    with pytest.raises(KeyError, match="Pruning cancelled"):
        tree.prune_all(asked, PruneStrategy.CHECK_FIRST)
    assert tree.exists(("study2",))
    whole = [
        ("study1", "series1"),
        ("study1", "series1", "a"),
        ("study1", "series1", "b"),
    ]
    tree.prune_all(whole, PruneStrategy.CHECK_FIRST)
    assert not tree.exists(("study1", "series1"))
    assert whole[0] == ("study1", "series1")  # the caller's list is not reordered


def test_prune_strategy_values() -> None:
    assert PruneStrategy("Force") is PruneStrategy.FORCE
    assert PruneStrategy.WHERE_POSSIBLE.value == "Where_possible"
    assert isinstance(PruneStrategy.CHECK_FIRST, str)


def test_last_updated_ordered_dict_moves_reassigned_keys() -> None:
    ordered = LastUpdatedOrderedDict()
    ordered["a"] = 1
    ordered["b"] = 2
    ordered["a"] = 3
    assert list(ordered) == ["b", "a"]


def test_expiring_collection(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(ExpiringCollection, "_now", staticmethod(lambda: now[0]))
    collection = ExpiringCollection(expire_after_seconds=10)
    collection.add_all(["a", "b"])
    now[0] += 6
    collection.add("a")  # restarts a's clock
    now[0] += 6
    assert collection.items == ["a"]
    assert collection.collect_expired() == ["b"]
    assert collection.collect_expired() == []
    now[0] += 100_000  # more than a day: 4.1.0 measured only the seconds field
    assert collection.items == []
    assert collection.collect_expired() == ["a"]
