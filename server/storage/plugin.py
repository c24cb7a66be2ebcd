"""Radicale storage plugin: ``[storage] type = server.storage.plugin``.

Implements Radicale 3.9's ``BaseStorage`` on the CRM database. One unit of work per request
is opened in ``acquire_lock`` and bound to the thread; every mutating method runs in its own
SAVEPOINT, so an error Radicale swallows never leaves half a write to be committed. Items
returned are fully loaded, because Radicale reads some of them after releasing the lock.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from typing import Callable, Iterable, Iterator, Optional, TypeVar

from radicale import item as radicale_item
from radicale import pathutils, storage, types
from sqlalchemy import inspect
from sqlalchemy.exc import IntegrityError

from server import request_context, vobject_tz
from server.crm import access, audit, dav, db
from server.crm.dav import CollectionState
from server.crm.errors import AlreadyExists, CrmError, NotFound
from server.crm.settings import OPTIONS as CRM_OPTIONS
from server.crm.settings import CrmSettings
from server.crm_hooks import Hooks, WriteHooks
from server.crm_hooks.audit import AuditHooks
from server.crm_hooks.crm import CrmHooks
from server.storage import mapping, unfolding
from server.rights import policy
from server.storage.collection import Collection, chunks

logger = logging.getLogger("radicale-crm")
T = TypeVar("T")
vobject_tz.install()   # one tzinfo per distinct VTIMEZONE: a third of a PUT, profiled
unfolding.install()    # linear, not quadratic, in the lines a property is folded over

PLUGIN_CONFIG_SCHEMA = {"storage": {
    "db_url": {"value": "", "type": str,
               "help": "SQLAlchemy database URL (default: $CRM_DATABASE_URL, else "
                       "sqlite:///var/radicale-crm.db)"},
    "db_pool_size": {"value": "5", "type": int,
                     "help": "connections kept open per server process (PostgreSQL)"},
    **{name: {"value": default, "type": str, "help": help_}
       for name, (default, help_) in CRM_OPTIONS.items()},
}}

_OWNER = policy.Decision("write", ("owner",), full=True)
_INTERNAL = policy.Decision("write", ("server-internal",), full=True)
_ROOT = CollectionState(id=0, path="", tag="", props={}, sync_key="root", revision=0,
                        pruned_revision=0,
                        modified_at=dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc))


class Storage(storage.BaseStorage):
    # Names live in a database column: any Unicode, trailing spaces and ":*?" are fine.
    _is_collision_free = True
    _supports_unicode = True
    _supports_trailing_whitespace = True
    _supports_problematic_chars = True

    def __init__(self, configuration) -> None:
        super().__init__(configuration.copy(PLUGIN_CONFIG_SCHEMA))
        url = db.url_from_config(self.configuration)
        engine = db.shared_engine(url, self.configuration.get("storage", "db_pool_size"))
        self.uow = db.UnitOfWork(engine)
        self.settings = CrmSettings.from_options(
            lambda name: self.configuration.get("storage", name))
        self.hooks: WriteHooks = Hooks(AuditHooks(), CrmHooks(self.settings))
        self._max_sync_age = dt.timedelta(
            seconds=self.configuration.get("storage", "max_sync_token_age"))
        logger.info("Storage: %s", engine.url.render_as_string(hide_password=True))
        self._check_schema(engine)

    @staticmethod
    def _check_schema(engine) -> None:
        try:
            present = inspect(engine).has_table("dav_collections")
        except Exception as e:
            if db.is_outage(e):
                logger.warning("Database not reachable at start-up (requests get 503 until "
                               "it is): %s", e)
                return
            raise
        if not present:
            raise RuntimeError("the database %s has no radicale-crm schema: run "
                               "`crm-admin db upgrade` first"
                               % engine.url.render_as_string(hide_password=True))

    # --- units of work ---------------------------------------------------------------------
    @types.contextmanager
    def acquire_lock(self, mode: str, user: str = "", *args, **kwargs) -> Iterator[None]:
        write = mode == "w"
        # Writers lock the collections they touch; a write without a path (Radicale's
        # principal auto-creation) locks the user's principal.
        lock_paths = (_lock_paths(kwargs.get("path"), kwargs.get("to_path"))
                      or [user or ""]) if write else ()
        with self._failures():
            with self.uow.begin(write=write, lock_paths=lock_paths):
                info = self.uow.info
                info["user"] = user or ""
                info["actor"] = kwargs.get("actor") or user or None
                info["request"] = kwargs.get("request")
                request_context.memo()["requester"] = user or ""
                yield

    @contextlib.contextmanager
    def reading(self):
        with self._failures():
            with self.uow.scope() as session:
                yield session

    @contextlib.contextmanager
    def writing(self):
        """A savepoint in the request's write transaction (or a transaction of its own).
        The audit records of the change are appended at its end, together."""
        with self._failures():
            with self.uow.begin(write=True) as session:
                try:
                    with session.begin_nested(), audit.deferring(session):
                        yield session
                finally:
                    self.uow.info.pop("collections", None)   # they may have changed
                    self.uow.info.pop("children", None)
                    self.uow.info.pop("item", None)
                    self.uow.info.pop("items", None)
                    request_context.memo().pop("home", None)

    @contextlib.contextmanager
    def _failures(self):
        try:
            yield
        except GeneratorExit:
            raise
        except Exception as e:
            if db.is_outage(e):
                request_context.mark_db_unavailable(e)
            raise

    def actor(self) -> Optional[str]:
        return self.uow.info.get("actor")

    def translate(self, call: Callable[[], T]) -> T:
        """Run a domain call; its typed errors become what Radicale expects (ValueError → 4xx),
        with the reason kept for the client. Outages pass through untouched (→ 503)."""
        try:
            return call()
        except NotFound as e:
            request_context.set_reason(str(e))
            raise storage.ComponentNotFoundError(e.name) from e
        except AlreadyExists as e:
            request_context.set_reason(str(e))
            raise storage.ComponentExistsError(e.name) from e
        except CrmError as e:  # DuplicateUid, InvalidSyncToken, InvalidInput, ...
            request_context.set_reason(str(e))
            raise ValueError(str(e)) from e
        except IntegrityError as e:
            reason = "conflicting concurrent write (the name or UID was just taken), retry"
            request_context.set_reason(reason)
            raise ValueError(reason) from e

    def prune(self, session, collection_id: int) -> None:
        dav.prune_tombstones(session, collection_id,
                             dav.utcnow() - self._max_sync_age)

    # --- BaseStorage -----------------------------------------------------------------------
    def discover(self, path: str, depth: str = "0",
                 child_context_manager=None, user_groups=set()) -> Iterator:
        sane = pathutils.strip_path(pathutils.sanitize_path(path))
        item = None
        with self.reading() as session:
            collection = self._collection_at(session, sane)
            if collection is None and sane:
                parent_path, _, href = sane.rpartition("/")
                parent = self._collection_at(session, parent_path) if parent_path else None
                if parent is not None and parent.tag:
                    stored = self._item_at(session, parent, href)
                    item = parent.visible(session, [stored])[0] if stored else None
        if collection is None:
            if item is not None:
                yield item
            return
        yield collection
        if depth == "0":
            return
        wrap = child_context_manager or (lambda _path, _href: contextlib.nullcontext())
        with self.reading() as session:
            if collection.tag:
                for chunk in chunks(dav.iter_items(session, collection.state.id)):
                    for stored, visible in zip(chunk, collection.visible(session, chunk)):
                        with wrap(sane, stored.href):
                            yield visible
            if collection.is_mirror:
                return
            for child in dav.child_collections(session, sane):
                with wrap(child.path, None):
                    yield Collection(self, child)
            subject = self.requester_subject(session)
            if subject is not None and sane == subject.name:
                for state, decision in access.shared_with(session, subject):
                    mirror = Collection(self, state, access.mirror_path(sane, state.id),
                                        decision)
                    with wrap(mirror.path, None):
                        yield mirror

    def _collection_at(self, session, sane: str) -> Optional[Collection]:
        """The collection at ``sane``: a stored one, or another user's collection shared
        with the requester and presented in their home."""
        if sane == "":
            return Collection(self, _ROOT)
        state = self._stored_collection(session, sane)
        if state is not None:
            return Collection(self, state)
        home, _, name = sane.partition("/")
        target_id = access.mirror_id(name) if "/" not in name else None
        subject = self.requester_subject(session) if target_id is not None else None
        if subject is None or subject.name != home:
            return None
        target = access.collection_by_id(session, target_id)
        if not access.shareable(target) or target.path.split("/")[0] == home:
            return None
        decision = self.view_of(target)
        return Collection(self, target, sane, decision) if decision.level else None

    def _stored_collection(self, session, sane: str) -> Optional[CollectionState]:
        """The stored collection at ``sane``, read once per unit of work: a PUT looks its
        collection up three times under the lock. The requester's home comes with their
        login (the auth plugin's query). Every write through this storage drops what was
        read, so nothing stale is seen after one."""
        cache = self.uow.info.setdefault("collections", {})
        if sane not in cache:
            home = request_context.memo().get("home")
            if home is not None and home.path == sane:
                cache[sane] = home
            elif sane.count("/") > 1 and sane.rpartition("/")[0] not in cache:
                # An item's path: its collection and the item are asked for next, so all
                # three are read at once.
                parent = sane.rpartition("/")[0]
                found, item = dav.get_collections_and_item(session, sane)
                cache.update({sane: found.get(sane), parent: found.get(parent)})
                self.uow.info["item"] = (sane, item)
            else:
                cache[sane], children = dav.get_collection_and_children(session, sane)
                self.uow.info.setdefault("children", {})[sane] = children
        return cache[sane]

    def has_children(self, session, path: str) -> bool:
        """Whether collections lie inside the stored collection at ``path``: known from its
        read in this unit of work when there was one (no second statement)."""
        known = self.uow.info.get("children", {}).get(path)
        return known if known is not None else bool(dav.child_collections(session, path))

    def _item_at(self, session, parent: Collection, href: str) -> Optional[dav.StoredItem]:
        """The item ``href`` of ``parent``: read with the collections when they were. Kept
        for this unit of work until a write: a PUT replacing it need not read it again."""
        path, item = self.uow.info.pop("item", (None, None))
        if path != f"{parent.state.path}/{href}" or parent.is_mirror:
            item = dav.get_item(session, parent.state.id, href)
        self.uow.info.setdefault("items", {})[(parent.state.id, href)] = item
        return item

    def item_read(self, collection_id: int, href: str) -> tuple[bool, Optional[dav.StoredItem]]:
        """(True, the item or None) if this unit of work read the item at ``href`` and has
        written nothing since; (False, None) if it did not read it."""
        items = self.uow.info.get("items", {})
        key = (collection_id, href)
        return (True, items[key]) if key in items else (False, None)

    # --- who is asking ---------------------------------------------------------------------
    def requester_subject(self, session) -> Optional[policy.Subject]:
        """The user of the current request (None outside requests, or if unknown)."""
        context = request_context.current()
        user = context.memo.get("requester") if context is not None else None
        if not user:
            return None
        return access.subject_of(session, user, (), context.memo)

    def view_of(self, state: CollectionState) -> policy.Decision:
        """What the requester may see of a collection. Outside a request (the CLI, tests of
        the storage contract) everything is visible; inside one the rights policy decides."""
        context = request_context.current()
        if context is None or "requester" not in context.memo:
            return _INTERNAL
        user = context.memo["requester"]
        key = ("view", user, state.id)
        if key in context.memo:
            return context.memo[key]
        owner = state.path.split("/", 1)[0]
        if user and owner == user:
            decision = _OWNER
        else:
            with self.reading() as session:
                subject = self.requester_subject(session)
                if subject is None:
                    decision = policy.NO_ACCESS
                elif state.path.count("/") != 1:
                    decision = _OWNER if subject.role == "admin" else policy.NO_ACCESS
                else:
                    facts = access.resolve(session, state.path, subject)
                    decision = policy.decide(subject, facts.target, facts.grants)
        context.memo[key] = decision
        return decision

    def create_collection(self, href: str, items: Optional[Iterable[radicale_item.Item]] = None,
                          props=None):
        sane = pathutils.strip_path(pathutils.sanitize_path(href))
        actor = self.actor()
        if props is None:
            # Radicale (app/__init__.py, 3.9) creates the predefined collections only when
            # this returns a truthy collection. Parallel first requests all find no principal
            # and all get here: only the one that created it may go on, or the others would
            # "create" (replace) calendars that already hold acknowledged writes.
            collection, created = self._ensure_collection(sane, actor)
            return (collection if created else None), {}, []
        props = dict(props)
        if sane.count("/") == 1:
            self._check_may_own(sane)
        # Only a whole-collection PUT (it has items) replaces an existing collection; MKCOL
        # and MKCALENDAR checked it was absent, so finding one here is a lost race.
        replace = items is not None
        with self.writing() as session:
            state, old_items = self.translate(
                lambda: dav.create_collection(session, sane, props, actor, replace=replace))
            batch: list[dav.ItemData] = []
            if props.get("tag") and items is not None:
                batch = self._import_batch(state, items)
                self.translate(lambda: dav.put_items(session, state.id, batch))
            state = dav.get_collection(session, sane) or state
            created = [dav.StoredItem(**data.__dict__, revision=state.revision)
                       for data in batch]
            self.hooks.collection_created(session, state, old_items, actor, created)
        new_hrefs = [data.href for data in batch]
        collection = Collection(self, state)
        replaced = {old.href: mapping.to_radicale(old, collection) for old in old_items}
        return collection, replaced, new_hrefs

    def _check_may_own(self, sane: str) -> None:
        """Viewers and externals own no calendars or address books (not even Radicale's
        predefined ones, which it creates without asking the rights plugin)."""
        home = sane.split("/", 1)[0]
        with self.reading() as session:
            role = access.load_owner(session, home).role
        if role and role not in policy.OWNS_COLLECTIONS:
            Collection.refuse(f"{home} has role {role}, which owns no calendars or "
                              "address books")

    def _ensure_collection(self, sane: str, actor: Optional[str]) -> tuple[Collection, bool]:
        """The collection, and whether this call created it."""
        if sane == "":
            return Collection(self, _ROOT), False
        try:
            with self.writing() as session:
                state, created = dav.ensure_collection(session, sane)
                if created:
                    self.hooks.collection_created(session, state, [], actor)
        except IntegrityError:
            # Another process created it between our look-up and insert: that is fine.
            with self.reading() as session:
                state = dav.get_collection(session, sane)
            if state is None:
                raise
            created = False
        return Collection(self, state), created

    def _import_batch(self, state: CollectionState, items: Iterable[radicale_item.Item]
                      ) -> list[dav.ItemData]:
        texts = mapping.imported_texts()
        suffix = ".vcf" if state.tag == "VADDRESSBOOK" else ".ics"
        taken: set[str] = set()
        batch = []
        for item in items:
            href = _free_href(item.uid, suffix, taken)
            taken.add(href)
            batch.append(mapping.to_data(href, item, texts.get(item.uid)))
        return batch

    def move(self, item: radicale_item.Item, to_collection: storage.BaseCollection,
             to_href: str) -> None:
        assert isinstance(item.collection, Collection) and isinstance(to_collection, Collection)
        source, target, actor = item.collection, to_collection, self.actor()
        with self.writing() as session:
            source.check_seen_in_full(session, item.href, "move")
            target.check_seen_in_full(session, to_href, "overwrite")
            old, new, _replaced = self.translate(lambda: dav.move_item(
                session, source.state, item.href, target.state, to_href))
            self.hooks.item_moved(session, source.state, target.state, old, new, actor)
            self.prune(session, source.state.id)

    def verify(self) -> bool:
        """Every stored item parses, and its UID and ETag match its text."""
        ok = True
        with self.reading() as session:
            for state in _walk(session, ""):
                if not state.tag:
                    continue
                for stored in dav.iter_items(session, state.id):
                    problem = _item_problem(state, stored)
                    if problem:
                        ok = False
                        logger.error("Invalid item %r in %r: %s", stored.href, state.path,
                                     problem)
        return ok


def _lock_paths(*paths: Optional[str]) -> list[str]:
    out = []
    for path in paths:
        if path:
            sane = pathutils.strip_path(pathutils.sanitize_path(path))
            out += [sane, sane.rpartition("/")[0]]
    return out


def _free_href(uid: str, suffix: str, taken: set[str]) -> str:
    candidates = [uid if uid.lower().endswith(suffix) else uid + suffix,
                  radicale_item.get_etag(uid).strip('"') + suffix]
    for href in candidates:
        if uid and pathutils.is_safe_filesystem_path_component(href) and href not in taken:
            return href
    return radicale_item.find_available_uid(lambda h: h in taken, suffix)


def _walk(session, path: str) -> Iterator[CollectionState]:
    for child in dav.child_collections(session, path):
        yield child
        yield from _walk(session, child.path)


def _item_problem(state: CollectionState, stored: dav.StoredItem) -> Optional[str]:
    try:
        parsed = radicale_item.Item(collection_path=state.path, text=stored.text)
        uid = parsed.uid
    except Exception as e:
        return "text does not parse: %s" % e
    if uid != stored.uid:
        return "UID column %r differs from the text's %r" % (stored.uid, uid)
    if radicale_item.get_etag(stored.text) != stored.etag:
        return "ETag column does not match the text"
    return None
