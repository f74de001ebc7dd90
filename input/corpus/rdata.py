#!/usr/bin/python3
"""Minimal reader for R's serialization format and lazy-load databases.

Pure standard library; no R needed.  Enough of the format is implemented to
read data sets shipped by R packages (character / numeric / integer / logical
vectors, lists, pairlists, attributes, symbols and references); closures,
environments and byte code are read structurally but not interpreted.

A lazy-load database is a pair of files:
  NAME.rdx  an RDS file (usually gzip-compressed) holding
            list(variables = list(<name> = c(offset, length), ...),
                 references = list(...), compressed = TRUE | 2 | 3)
  NAME.rdb  concatenated blobs; the blob at (offset, length) is a 4-byte
            big-endian uncompressed length followed by the compressed
            serialization (zlib when compressed is TRUE; for 2 / 3 a one-byte
            type tag 'Z' (zlib), '2' (bzip2), 'X' (xz) or '0' (none) precedes
            the payload).

Usage as a script:
  rdata.py DIR/Rdata.rdx            list the objects (name, R type, length)
  rdata.py DIR/Rdata.rdx NAME       print a character vector, one element a line
"""

import bz2
import gzip
import signal
import lzma
import struct
import sys
import zlib

# SEXP types
NILSXP, SYMSXP, LISTSXP, CLOSXP, ENVSXP, PROMSXP, LANGSXP = 0, 1, 2, 3, 4, 5, 6
SPECIALSXP, BUILTINSXP, CHARSXP, LGLSXP = 7, 8, 9, 10
INTSXP, REALSXP, CPLXSXP, STRSXP, DOTSXP, ANYSXP, VECSXP = 13, 14, 15, 16, 17, 18, 19
EXPRSXP, BCODESXP, EXTPTRSXP, WEAKREFSXP, RAWSXP, S4SXP = 20, 21, 22, 23, 24, 25
# pseudo types used only in the stream
REFSXP, NILVALUE_SXP, GLOBALENV_SXP, UNBOUNDVALUE_SXP = 255, 254, 253, 252
MISSINGARG_SXP, BASENAMESPACE_SXP, NAMESPACESXP, PACKAGESXP = 251, 250, 249, 248
PERSISTSXP, CLASSREFSXP, GENERICREFSXP, BCREPDEF = 247, 246, 245, 244
EMPTYENV_SXP, BASEENV_SXP, ATTRLANGSXP, ATTRLISTSXP, ALTREP_SXP = 242, 241, 240, 239, 238
BCREPREF = 243

IS_OBJECT_BIT, HAS_ATTR_BIT, HAS_TAG_BIT = 1 << 8, 1 << 9, 1 << 10
NA_INTEGER = -(2 ** 31)


class RObject:
    """A generic R object: .rtype (int), .value, .attributes (dict or None)."""

    __slots__ = ("rtype", "value", "attributes", "tag")

    def __init__(self, rtype, value=None, attributes=None, tag=None):
        self.rtype = rtype
        self.value = value
        self.attributes = attributes
        self.tag = tag

    def __repr__(self):
        return "RObject(type=%d, value=%r)" % (self.rtype, self.value)


class RSymbol(str):
    """An R symbol (a str subclass so it can be used as a dict key)."""


class Unserializer:
    def __init__(self, data, persistent_hook=None):
        self.data = data
        self.pos = 0
        self.refs = []
        self.persistent_hook = persistent_hook
        self.fmt = None
        self.native_encoding = "UTF-8"

    # ---- primitive readers (XDR = big-endian) ---------------------------
    def _need(self, n):
        if self.pos + n > len(self.data):
            raise ValueError("truncated R serialization stream")

    def int(self):
        self._need(4)
        (v,) = struct.unpack_from(">i", self.data, self.pos)
        self.pos += 4
        return v

    def ints(self, n):
        self._need(4 * n)
        v = struct.unpack_from(">%di" % n, self.data, self.pos)
        self.pos += 4 * n
        return list(v)

    def doubles(self, n):
        self._need(8 * n)
        v = struct.unpack_from(">%dd" % n, self.data, self.pos)
        self.pos += 8 * n
        return list(v)

    def raw(self, n):
        self._need(n)
        v = self.data[self.pos:self.pos + n]
        self.pos += n
        return v

    def length(self):
        n = self.int()
        if n == -1:  # long vector: two more ints
            hi, lo = self.int(), self.int()
            n = (hi << 32) + (lo & 0xFFFFFFFF)
        return n

    # ---- header ----------------------------------------------------------
    def header(self):
        fmt = self.raw(2)
        if fmt == b"X\n":
            self.fmt = "xdr"
        elif fmt in (b"A\n", b"B\n"):
            raise ValueError("only XDR (binary big-endian) serialization is supported, got %r" % fmt)
        else:
            raise ValueError("not an R serialization stream (magic %r)" % fmt)
        version = self.int()
        self.int()  # writer R version
        self.int()  # minimal reader R version
        if version == 3:
            nelen = self.int()
            self.native_encoding = self.raw(nelen).decode("ascii", "replace")
        elif version != 2:
            raise ValueError("unsupported serialization version %d" % version)
        return version

    def read(self):
        self.header()
        return self.item()

    # ---- items -------------------------------------------------------------
    def string_vec(self):
        if self.int() != 0:
            raise ValueError("names in persistent strings are not supported")
        n = self.int()
        return RObject(STRSXP, [self.item() for _ in range(n)])

    def charsxp(self, flags):
        n = self.int()
        if n == -1:
            return None  # NA_character_
        b = self.raw(n)
        levels = flags >> 12
        if levels & (1 << 2):  # LATIN1_MASK
            return b.decode("latin-1")
        try:
            return b.decode("utf-8")
        except UnicodeDecodeError:
            return b.decode("latin-1")

    def attributes_of(self, flags):
        if flags & HAS_ATTR_BIT:
            return self.pairlist_to_dict(self.item())
        return None

    @staticmethod
    def pairlist_to_dict(pl):
        out = {}
        if isinstance(pl, RObject) and pl.rtype == LISTSXP:
            for i, (tag, val) in enumerate(pl.value):
                out[tag if tag is not None else i] = val
        return out

    def item(self):
        flags = self.int()
        t = flags & 0xFF
        if t == NILVALUE_SXP:
            return None
        if t == EMPTYENV_SXP:
            return RObject(ENVSXP, "emptyenv")
        if t == BASEENV_SXP:
            return RObject(ENVSXP, "baseenv")
        if t == GLOBALENV_SXP:
            return RObject(ENVSXP, "globalenv")
        if t == UNBOUNDVALUE_SXP:
            return RObject(t, "unbound")
        if t == MISSINGARG_SXP:
            return RObject(t, "missing")
        if t == BASENAMESPACE_SXP:
            return RObject(ENVSXP, "base namespace")
        if t == REFSXP:
            idx = flags >> 8
            if idx == 0:
                idx = self.int()
            return self.refs[idx - 1]
        if t == PERSISTSXP:
            names = self.string_vec()
            obj = RObject(PERSISTSXP, names)
            if self.persistent_hook is not None:
                obj = self.persistent_hook(names)
            self.refs.append(obj)
            return obj
        if t == SYMSXP:
            name = self.item()  # a CHARSXP
            sym = RSymbol(name if name is not None else "NA")
            self.refs.append(sym)
            return sym
        if t in (PACKAGESXP, NAMESPACESXP):
            info = self.string_vec()
            obj = RObject(ENVSXP, ("namespace" if t == NAMESPACESXP else "package", info))
            self.refs.append(obj)
            return obj
        if t == ENVSXP:
            locked = self.int()
            obj = RObject(ENVSXP, {"locked": bool(locked)})
            self.refs.append(obj)  # registered before its contents (may be cyclic)
            enclos = self.item()
            frame = self.item()
            hashtab = self.item()
            attrs = self.item()
            obj.value.update(enclos=enclos, frame=frame, hashtab=hashtab)
            obj.attributes = self.pairlist_to_dict(attrs)
            return obj
        if t in (LISTSXP, LANGSXP, CLOSXP, PROMSXP, DOTSXP, ATTRLANGSXP, ATTRLISTSXP):
            # Pairlist-like cells; read the CDR chain iteratively.
            first_attrs = None
            cells = []
            rtype = {ATTRLANGSXP: LANGSXP, ATTRLISTSXP: LISTSXP}.get(t, t)
            while True:
                attrs = self.item() if (flags & HAS_ATTR_BIT) else None
                if first_attrs is None and attrs is not None:
                    first_attrs = self.pairlist_to_dict(attrs)
                tag = self.item() if (flags & HAS_TAG_BIT) else None
                car = self.item()
                cells.append((str(tag) if isinstance(tag, str) else tag, car))
                # peek at the CDR: continue the loop while it is the same kind of cell
                nflags = self.int()
                nt = nflags & 0xFF
                if nt == t and t in (LISTSXP, LANGSXP, DOTSXP, ATTRLISTSXP, ATTRLANGSXP):
                    flags = nflags
                    continue
                self.pos -= 4
                cdr = self.item()
                if cdr is not None:
                    cells.append(("__cdr__", cdr))
                break
            return RObject(rtype, cells, first_attrs)
        if t == CHARSXP:
            return self.charsxp(flags)
        if t in (SPECIALSXP, BUILTINSXP):
            n = self.int()
            return RObject(t, self.raw(n).decode("ascii", "replace"))
        if t == EXTPTRSXP:
            obj = RObject(t, None)
            self.refs.append(obj)
            prot = self.item()
            tag = self.item()
            obj.value = (prot, tag)
            obj.attributes = self.attributes_of(flags)
            return obj
        if t == WEAKREFSXP:
            obj = RObject(t, None)
            self.refs.append(obj)
            obj.attributes = self.attributes_of(flags)
            return obj
        if t == S4SXP:
            return RObject(t, None, self.attributes_of(flags))
        if t == ALTREP_SXP:
            info = self.item()
            state = self.item()
            attr = self.item()
            return self.altrep(info, state, self.pairlist_to_dict(attr))
        if t == BCODESXP:
            return self.bytecode(flags)
        # vectors
        n = self.length()
        if t in (LGLSXP, INTSXP):
            vals = self.ints(n)
            if t == LGLSXP:
                vals = [None if v == NA_INTEGER else bool(v) for v in vals]
            else:
                vals = [None if v == NA_INTEGER else v for v in vals]
        elif t == REALSXP:
            vals = self.doubles(n)
        elif t == CPLXSXP:
            d = self.doubles(2 * n)
            vals = [complex(d[2 * i], d[2 * i + 1]) for i in range(n)]
        elif t == STRSXP:
            vals = []
            for _ in range(n):
                cflags = self.int()
                if (cflags & 0xFF) != CHARSXP:
                    raise ValueError("STRSXP element is not a CHARSXP")
                vals.append(self.charsxp(cflags))
        elif t in (VECSXP, EXPRSXP):
            vals = [self.item() for _ in range(n)]
        elif t == RAWSXP:
            vals = self.raw(n)
        else:
            raise ValueError("unsupported SEXP type %d at offset %d" % (t, self.pos))
        return RObject(t, vals, self.attributes_of(flags))

    def altrep(self, info, state, attrs):
        # info is a pairlist (class symbol, package symbol, type)
        cls = info.value[0][1] if isinstance(info, RObject) and info.value else None
        if cls == "compact_intseq" and isinstance(state, RObject):
            n, start, step = (int(x) for x in state.value)
            return RObject(INTSXP, list(range(start, start + n * step, step)), attrs)
        if cls == "compact_realseq" and isinstance(state, RObject):
            n, start, step = state.value
            return RObject(REALSXP, [start + i * step for i in range(int(n))], attrs)
        if cls in ("wrap_integer", "wrap_real", "wrap_string", "wrap_logical",
                   "wrap_list", "wrap_complex", "wrap_raw") and isinstance(state, RObject):
            inner = state.value[0][1] if state.rtype == LISTSXP else state.value[0]
            if isinstance(inner, RObject):
                inner.attributes = attrs or inner.attributes
            return inner
        if cls == "deferred_string" and isinstance(state, RObject):
            inner = state.value[0][1] if state.rtype == LISTSXP else state
            if isinstance(inner, RObject):
                return RObject(STRSXP, [None if v is None else
                                        (repr(v) if isinstance(v, float) else str(v))
                                        for v in inner.value], attrs)
        return RObject(ALTREP_SXP, (cls, state), attrs)

    def bytecode(self, flags):
        reps = self.int()
        table = [None] * reps
        code = self.bc1(table)
        return RObject(BCODESXP, code, None)

    def bc1(self, table):
        code = self.item()
        n = self.int()
        consts = []
        for _ in range(n):
            ctype = self.int()
            if ctype == BCODESXP:
                consts.append(self.bc1(table))
            elif ctype in (LANGSXP, LISTSXP, BCREPDEF, BCREPREF, ATTRLANGSXP, ATTRLISTSXP):
                consts.append(self.bclang(ctype, table))
            else:
                consts.append(self.item())
        return (code, consts)

    def bclang(self, t, table):
        if t == BCREPREF:
            return table[self.int()]
        if t in (BCREPDEF, LANGSXP, LISTSXP, ATTRLANGSXP, ATTRLISTSXP):
            pos = -1
            if t == BCREPDEF:
                pos = self.int()
                t = self.int()
            attr = self.item() if t in (ATTRLANGSXP, ATTRLISTSXP) else None
            tag = self.item()
            car = self.bclang(self.int(), table)
            obj = RObject(t, [tag, car], attr)
            if pos >= 0:
                table[pos] = obj
            obj.value.append(self.bclang(self.int(), table))
            return obj
        return self.item()


def unserialize(data, persistent_hook=None):
    return Unserializer(data, persistent_hook).read()


def read_rds(path):
    """Read an .rds / .rdx file (gzip, bzip2, xz or uncompressed)."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    elif raw[:3] == b"BZh":
        raw = bz2.decompress(raw)
    elif raw[:6] == b"\xfd7zXZ\x00":
        raw = lzma.decompress(raw)
    return unserialize(raw)


def as_dict(obj):
    """Named R list / pairlist -> Python dict of name -> element."""
    if obj is None:
        return {}
    if obj.rtype == LISTSXP:
        return {tag: val for tag, val in obj.value}
    names = (obj.attributes or {}).get("names")
    if names is None:
        raise ValueError("object has no names")
    return dict(zip(names.value, obj.value))


class LazyLoadDB:
    """Reads objects from an R lazy-load database (NAME.rdx + NAME.rdb)."""

    def __init__(self, rdx_path):
        if not rdx_path.endswith(".rdx"):
            raise ValueError("expected a .rdx path")
        self.rdb_path = rdx_path[:-4] + ".rdb"
        index = as_dict(read_rds(rdx_path))
        self.variables = {k: tuple(int(x) for x in v.value) for k, v in as_dict(index["variables"]).items()}
        refs = index.get("references")
        self.references = {k: tuple(int(x) for x in v.value) for k, v in as_dict(refs).items()} if refs is not None and refs.value else {}
        comp = index.get("compressed")
        c = comp.value[0] if comp is not None else True
        self.compressed = 1 if c is True else (0 if c is False else int(c))
        self._ref_cache = {}

    def names(self):
        return list(self.variables)

    def _blob(self, offset_len):
        off, n = offset_len
        with open(self.rdb_path, "rb") as f:
            f.seek(off)
            blob = f.read(n)
        if not self.compressed:
            return blob
        (outlen,) = struct.unpack(">I", blob[:4])
        if self.compressed == 1:
            out = zlib.decompress(blob[4:])
        else:
            kind = blob[4:5]
            body = blob[5:]
            if kind == b"Z":
                out = zlib.decompress(body)
            elif kind == b"2":
                out = bz2.decompress(body)
            elif kind == b"X":
                out = lzma.decompress(body, format=lzma.FORMAT_XZ)
            elif kind == b"0":
                out = body
            else:
                raise ValueError("unknown lazy-load compression tag %r" % kind)
        if len(out) != outlen:
            raise ValueError("lazy-load blob length mismatch (%d != %d)" % (len(out), outlen))
        return out

    def _persistent(self, names):
        key = names.value[0] if isinstance(names, RObject) else str(names)
        if key not in self._ref_cache:
            if key in self.references:
                self._ref_cache[key] = unserialize(self._blob(self.references[key]), self._persistent)
            else:
                self._ref_cache[key] = RObject(ENVSXP, ("persistent", key))
        return self._ref_cache[key]

    def get(self, name):
        return unserialize(self._blob(self.variables[name]), self._persistent)


TYPE_NAMES = {NILSXP: "NULL", SYMSXP: "symbol", LISTSXP: "pairlist", CLOSXP: "closure",
              ENVSXP: "environment", LANGSXP: "language", CHARSXP: "char", LGLSXP: "logical",
              INTSXP: "integer", REALSXP: "double", CPLXSXP: "complex", STRSXP: "character",
              VECSXP: "list", EXPRSXP: "expression", RAWSXP: "raw", S4SXP: "S4"}


def main(argv):
    if len(argv) < 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    db = LazyLoadDB(argv[1])
    if len(argv) == 2:
        for name in db.names():
            obj = db.get(name)
            if isinstance(obj, RObject):
                n = len(obj.value) if hasattr(obj.value, "__len__") else 1
                print("%s\t%s\t%d" % (name, TYPE_NAMES.get(obj.rtype, str(obj.rtype)), n))
            else:
                print("%s\t%s" % (name, type(obj).__name__))
        return 0
    obj = db.get(argv[2])
    if not isinstance(obj, RObject) or obj.rtype != STRSXP:
        print("%s is not a character vector" % argv[2], file=sys.stderr)
        return 1
    out = sys.stdout
    for s in obj.value:
        out.write(("NA" if s is None else s) + "\n")
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main(sys.argv))
