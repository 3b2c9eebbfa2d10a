"""Small general-purpose containers kept from dicomtrolley 4.1.0's public API.

- :class:`TreeNode`: a tree of dicts with a ``data`` slot per node, addressed by
  tuples of keys (``("study", "series", "instance")``; :func:`addr` builds one
  from ``"study.series.instance"``). Reading a missing key creates the node, as
  with ``collections.defaultdict``.
- :class:`ExpiringCollection`: remembers when each item was added and hands out
  those older than a limit.
- :class:`LastUpdatedOrderedDict`: an ordered dict ordered by last assignment.

dicomtrolley itself no longer builds its search trees or caches on these
(see :mod:`dicomtrolley.parsing` and :mod:`dicomtrolley.caching`), except that
:attr:`dicomtrolley.parsing.DICOMParseTree.root` is a TreeNode, as in 4.1.0.
Unlike 4.1.0, multi-character keys work at every depth in
:meth:`TreeNode.iter_leaf_addresses` and :meth:`TreeNode.pop_address`, ages are
measured with a monotonic clock in whole (not wrapped-around) seconds, and
:meth:`TreeNode.prune_all` does not reorder the list it is given.
"""

from __future__ import annotations

import time
from collections import OrderedDict, defaultdict
from collections.abc import Hashable, Iterable, Iterator, Sequence
from enum import Enum
from typing import Any

__all__ = [
    "ExpiringCollection",
    "LastUpdatedOrderedDict",
    "PruneStrategy",
    "TreeAddress",
    "TreeNode",
    "addr",
]

#: Where a node sits in a TreeNode: the keys from the root down.
TreeAddress = tuple[str, ...]


def addr(dot_address: str) -> TreeAddress:
    """``"a.b.c"`` as the address ``("a", "b", "c")``.

    For keys that contain dots (DICOM UIDs do), write the tuple yourself.
    """
    return tuple(dot_address.split("."))


class PruneStrategy(str, Enum):
    """What :meth:`TreeNode.prune_all` does with addresses it cannot prune cleanly.

    FORCE
        Remove every node asked for, with whatever hangs below it.
    WHERE_POSSIBLE
        Remove only nodes that have no children (after the removals before
        them); skip the others.
    CHECK_FIRST
        Remove all nodes asked for, or none: refuse (KeyError) when one of them
        would take children with it that were not asked for as well.
    """

    FORCE = "Force"
    WHERE_POSSIBLE = "Where_possible"
    CHECK_FIRST = "Check_first"


class TreeNode(defaultdict[str, "TreeNode"]):
    """A node of a tree: a dict of child nodes plus a ``data`` value.

    >>> root = TreeNode()
    >>> root["study"]["series"]["instance"].data = "an instance"
    >>> root.get_node(("study", "series", "instance")).data
    'an instance'

    Parameters
    ----------
    data:
        The value this node holds.
    allow_overwrite:
        When False, setting ``data`` on a node that already holds a (truthy)
        value raises ValueError. Child nodes inherit this setting.
    """

    def __init__(self, data: Any = None, allow_overwrite: bool = True) -> None:
        super().__init__()
        self._data = data
        self.allow_overwrite = allow_overwrite

    def __missing__(self, key: str) -> TreeNode:
        child = TreeNode(allow_overwrite=self.allow_overwrite)
        self[key] = child
        return child

    def __repr__(self) -> str:
        return f"TreeNode(data={self._data!r}, children={list(self)!r})"

    @property
    def data(self) -> Any:
        return self._data

    @data.setter
    def data(self, value: Any) -> None:
        if self._data and not self.allow_overwrite:
            raise ValueError("Overwriting data is not allowed")
        self._data = value

    @classmethod
    def init_from_addresses(cls, addresses: Sequence[TreeAddress]) -> TreeNode:
        """A tree in which a node exists at every one of addresses."""
        root = cls()
        for address in addresses:
            root.get_node(address)
        return root

    def iter_leaf_addresses(
        self, address_so_far: TreeAddress = ()
    ) -> Iterator[TreeAddress]:
        """The address of every leaf below this node, depth first."""
        if not self:
            yield address_so_far
            return
        for key, child in self.items():
            yield from child.iter_leaf_addresses((*address_so_far, key))

    def exists(self, address: TreeAddress) -> bool:
        """Whether a node exists at address. Creates nothing."""
        node = self
        for key in address:
            found = dict.get(node, key)
            if found is None:
                return False
            node = found
        return True

    def add(self, object_in: Any, address: TreeAddress) -> None:
        """Put object_in in the data of the node at address (created if needed)."""
        self.get_node(address).data = object_in

    def copy(self) -> TreeNode:
        """A deep copy of the tree structure (data values themselves are shared)."""
        duplicate = TreeNode(data=self._data, allow_overwrite=self.allow_overwrite)
        for key, child in self.items():
            dict.__setitem__(duplicate, key, child.copy())
        return duplicate

    def get_node(self, address: TreeAddress, create: bool = True) -> TreeNode:
        """The node at address.

        Raises
        ------
        KeyError
            When create is False and there is no node at address.
        """
        node = self
        for key in address:
            if not create and key not in node:
                raise KeyError(f"Key {key} not found")
            node = node[key]
        return node

    def pop_address(self, address: TreeAddress) -> TreeNode:
        """Remove the node at address (with its children) and return it.

        Raises
        ------
        KeyError
            When address is empty or there is no node at it.
        """
        if not address:
            raise KeyError("Address was empty. Cannot pop self!")
        try:
            parent = self.get_node(address[:-1], create=False)
            return parent.pop(address[-1])
        except KeyError as error:
            raise KeyError(f"No node found at {'.'.join(address)}") from error

    def prune(self, address: TreeAddress) -> None:
        """Remove the node at address and everything below it (KeyError if absent)."""
        self.pop_address(address)

    def is_leaf(self) -> bool:
        return not self

    def prune_leaf(self, address: TreeAddress) -> None:
        """Remove the node at address if it has no children.

        Raises
        ------
        KeyError
            When address is empty or there is no node at it.
        ValueError
            When the node has children.
        """
        if not address:
            raise KeyError("Address was empty. Cannot prune self!")
        try:
            node = self.get_node(address, create=False)
        except KeyError as error:
            raise KeyError(f"Cannot prune non-existing node at {address}") from error
        if not node.is_leaf():
            raise ValueError(f"Node at {address} is not a leaf: it has children")
        self.pop_address(address)

    def prune_all(
        self,
        addresses: list[TreeAddress],
        strategy: PruneStrategy = PruneStrategy.WHERE_POSSIBLE,
    ) -> None:
        """Remove the nodes at addresses, the way strategy says.

        Raises
        ------
        KeyError
            CHECK_FIRST: when some node would take unlisted children with it
            (nothing is removed then). WHERE_POSSIBLE and CHECK_FIRST: when an
            address has no node.
        """
        if strategy == PruneStrategy.FORCE:
            for address in addresses:
                if self.exists(address):
                    self.prune(address)
        elif strategy == PruneStrategy.WHERE_POSSIBLE:
            for address in addresses:
                try:
                    self.prune_leaf(address)
                except ValueError:
                    continue
        elif strategy == PruneStrategy.CHECK_FIRST:
            deepest_first = sorted(addresses, key=len, reverse=True)
            trial = self.copy()
            try:
                for address in deepest_first:
                    trial.prune_leaf(address)
            except ValueError as error:
                raise KeyError(
                    f"Cannot prune all addresses: {error}. Pruning cancelled"
                ) from error
            for address in deepest_first:
                self.prune_leaf(address)
        else:
            raise ValueError(f"Unknown strategy '{strategy}'")


class LastUpdatedOrderedDict(OrderedDict[Any, Any]):
    """An OrderedDict in the order keys were last assigned (not first inserted)."""

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)


class ExpiringCollection:
    """Items that expire expire_after_seconds after they were (last) added.

    Expired items move to :attr:`expired_items` when :meth:`check_expired` runs
    (reading :attr:`items` runs it); :meth:`collect_expired` hands them out once.
    """

    def __init__(self, expire_after_seconds: float) -> None:
        self.expire_after_seconds = expire_after_seconds
        self.stamped_items: LastUpdatedOrderedDict = LastUpdatedOrderedDict()
        self.expired_items: list[Any] = []

    @staticmethod
    def _now() -> float:
        return time.monotonic()

    def add(self, item: Hashable) -> None:
        """Add item, or restart its clock if it is already here."""
        self.stamped_items[item] = self._now()

    def add_all(self, items: Iterable[Hashable]) -> None:
        for item in items:
            self.add(item)

    @property
    def items(self) -> list[Any]:
        """The items that have not expired, oldest first."""
        self.check_expired()
        return list(self.stamped_items)

    def check_expired(self) -> None:
        """Move every expired item to :attr:`expired_items`."""
        now = self._now()
        expired = []
        for item, stamp in self.stamped_items.items():
            if now - stamp <= self.expire_after_seconds:
                break  # the rest were added later
            expired.append(item)
        for item in expired:
            del self.stamped_items[item]
        self.expired_items.extend(expired)

    def collect_expired(self) -> list[Hashable]:
        """The items that expired since the last call, removed from here."""
        self.check_expired()
        expired, self.expired_items = self.expired_items, []
        return expired
