import CFerrySys
import FerryFS
import FerryProtocol
import FerrySystem

/// Host structures to FUSE wire structures.
enum Conversions {
    /// statx → fuse_attr.
    static func attributes(_ s: HostStat) -> Attributes {
        var a = Attributes()
        a.ino = s.stx_ino
        a.size = s.stx_size
        a.blocks = s.stx_blocks
        a.atime = UInt64(bitPattern: s.stx_atime.tv_sec); a.atimeNsec = s.stx_atime.tv_nsec
        a.mtime = UInt64(bitPattern: s.stx_mtime.tv_sec); a.mtimeNsec = s.stx_mtime.tv_nsec
        a.ctime = UInt64(bitPattern: s.stx_ctime.tv_sec); a.ctimeNsec = s.stx_ctime.tv_nsec
        a.mode = UInt32(s.stx_mode)
        a.nlink = s.stx_nlink
        a.uid = s.stx_uid
        a.gid = s.stx_gid
        a.rdev = DeviceNumber.encode32(major: s.stx_rdev_major, minor: s.stx_rdev_minor)
        a.blksize = s.stx_blksize
        return a
    }

    /// statx → fuse_statx.
    static func statx(_ s: HostStat) -> StatxAttributes {
        var x = StatxAttributes()
        x.mask = s.stx_mask & ~HostFlags.statxMntID
        x.blksize = s.stx_blksize
        x.attributes = s.stx_attributes
        x.nlink = s.stx_nlink; x.uid = s.stx_uid; x.gid = s.stx_gid; x.mode = s.stx_mode
        x.ino = s.stx_ino; x.size = s.stx_size; x.blocks = s.stx_blocks
        x.attributesMask = s.stx_attributes_mask
        func time(_ t: ferry_statx_timestamp) -> StatxAttributes.Time { .init(seconds: t.tv_sec, nanoseconds: t.tv_nsec) }
        x.atime = time(s.stx_atime); x.btime = time(s.stx_btime)
        x.ctime = time(s.stx_ctime); x.mtime = time(s.stx_mtime)
        x.rdevMajor = s.stx_rdev_major; x.rdevMinor = s.stx_rdev_minor
        x.devMajor = s.stx_dev_major; x.devMinor = s.stx_dev_minor
        return x
    }

    /// statfs → fuse_kstatfs.
    static func statfs(_ s: CFerrySys.statfs) -> StatfsOut {
        StatfsOut(blocks: UInt64(s.f_blocks), bfree: UInt64(s.f_bfree), bavail: UInt64(s.f_bavail),
                  files: UInt64(s.f_files), ffree: UInt64(s.f_ffree), bsize: UInt32(truncatingIfNeeded: s.f_bsize),
                  namelen: UInt32(truncatingIfNeeded: s.f_namelen), frsize: UInt32(truncatingIfNeeded: s.f_frsize))
    }

    /// SETATTR arguments → host attribute changes.
    static func changes(_ s: SetattrIn) -> AttributeChanges {
        var c = AttributeChanges()
        if s.valid.contains(.mode) { c.mode = s.mode & 0o7777 }
        if s.valid.contains(.uid) { c.uid = s.uid }
        if s.valid.contains(.gid) { c.gid = s.gid }
        if s.valid.contains(.size) { c.size = s.size }
        if s.valid.contains(.atimeNow) { c.atime = .now }
        else if s.valid.contains(.atime) { c.atime = .at(seconds: Int64(bitPattern: s.atime), nanoseconds: s.atimeNsec) }
        if s.valid.contains(.mtimeNow) { c.mtime = .now }
        else if s.valid.contains(.mtime) { c.mtime = .at(seconds: Int64(bitPattern: s.mtime), nanoseconds: s.mtimeNsec) }
        if s.valid.contains(.fh) { c.fh = s.fh }
        c.ctimeGiven = s.valid.contains(.ctime)
        return c
    }
}
