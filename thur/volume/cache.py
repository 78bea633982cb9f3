"""The write-back page cache of one volume: whole pages in RAM under a byte budget.

Pure bookkeeping, no I/O and no locking: the volume calls it under its own
lock. A page is *clean* (equal to what its page-table entry names, evictable
at any time) or *dirty* (newer than the table; written back before it may be
evicted). Each modification bumps the page's generation, so a write-back that
snapshotted generation g marks the page clean only if nothing changed since.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(slots=True)
class CachedPage:
    data: bytearray
    gen: int = 0
    dirty: bool = False


class PageCache:
    def __init__(self, budget: int, page_size: int) -> None:
        self.page_size = page_size
        self.budget = budget
        self._pages: OrderedDict[int, CachedPage] = OrderedDict()  # least recently used first
        self._dirty: OrderedDict[int, float] = OrderedDict()  # page -> first dirtied, oldest first

    def __len__(self) -> int:
        return len(self._pages)

    @property
    def bytes(self) -> int:
        return len(self._pages) * self.page_size

    @property
    def dirty_bytes(self) -> int:
        return len(self._dirty) * self.page_size

    def get(self, page: int) -> CachedPage | None:
        """The cached page, marked most recently used."""
        pg = self._pages.get(page)
        if pg is not None:
            self._pages.move_to_end(page)
        return pg

    def peek(self, page: int) -> CachedPage | None:
        return self._pages.get(page)

    def insert(self, page: int, data: bytearray) -> CachedPage:
        pg = CachedPage(data)
        self._pages[page] = pg
        return pg

    def modified(self, page: int, now: float) -> None:
        pg = self._pages[page]
        pg.gen += 1
        if not pg.dirty:
            pg.dirty = True
            self._dirty[page] = now

    def cleaned(self, page: int, gen: int) -> None:
        """A write-back of generation `gen` reached the page table."""
        pg = self._pages.get(page)
        if pg is not None and pg.dirty and pg.gen == gen:
            pg.dirty = False
            del self._dirty[page]

    def drop(self, page: int) -> None:
        """Forget a page, dirty or not (it was unmapped or replaced in the table)."""
        if self._pages.pop(page, None) is not None:
            self._dirty.pop(page, None)

    def evict_clean(self) -> bool:
        """Drop the least recently used clean page; False when every page is dirty."""
        for page, pg in self._pages.items():
            if not pg.dirty:
                del self._pages[page]
                return True
        return False

    def room_for(self, pages: int) -> bool:
        return self.bytes + pages * self.page_size <= self.budget

    def oldest_dirty(
        self, limit: int, skip: set[int], older_than: float | None = None
    ) -> list[int]:
        """Up to `limit` dirty pages, oldest first, not in `skip`; with `older_than`,
        only those dirtied before that time."""
        out = []
        for page, since in self._dirty.items():
            if older_than is not None and since >= older_than:
                break
            if page not in skip:
                out.append(page)
                if len(out) >= limit:
                    break
        return out

    def dirty_pages(self) -> list[int]:
        return list(self._dirty)

    def pages_in(self, first: int, stop: int) -> Iterator[tuple[int, CachedPage]]:
        """Cached pages in [first, stop) (any order)."""
        for page, pg in list(self._pages.items()):
            if first <= page < stop:
                yield page, pg

    def clear(self) -> None:
        self._pages.clear()
        self._dirty.clear()
