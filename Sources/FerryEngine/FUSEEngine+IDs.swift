import FerryFS
import FerryProtocol
import FerrySystem
import Glibc
import Synchronization

/// Every id that crosses the request path, in one place (protocol/id-translation.md):
///
/// - in: the caller's uid, gid and supplementary groups (`becomeCaller`), SETATTR's new owner
///   (`hostChanges`), the owners inside a POSIX ACL being written (`hostXattrValue`): guest ->
///   host, a `forbid-guest` id refused with EPERM;
/// - out: attributes in entry, attr and readdirplus replies (`guestAttributes`), STATX
///   (`guestStatx`), the owners inside a POSIX ACL being read (`guestXattrValue`): host -> guest;
/// - idmapped mounts (FUSE_ALLOW_IDMAP): requests without a caller (FUSE_INVALID_UIDGID) run
///   with Ferry's own rights after the kernel's check, and new inodes get the mapped owner the
///   kernel sent (`givingOwner`).
extension FUSEEngine {
    /// Applies the caller's fsuid, fsgid and supplementary groups to this thread, translated to
    /// host ids; throws EPERM when a `forbid-guest` rule refuses the caller's uid or gid.
    ///
    /// RELEASE and RELEASEDIR carry no caller (the kernel sends them with uid, gid and pid 0)
    /// and only close descriptors, drop locks and backing ids, which no identity affects: the
    /// thread keeps the one it has, instead of switching to root and back to the next caller
    /// (two setgroups and four setfsuid/setfsgid per file a user opens and closes).
    func becomeCaller(_ header: InHeader, _ worker: Worker) throws(Errno) {
        if header.opcode == Opcode.release.rawValue || header.opcode == Opcode.releasedir.rawValue { return }
        if header.uid == IDRule.noID || header.gid == IDRule.noID {
            // FUSE_INVALID_UIDGID: with idmapped mounts agreed, the kernel names the caller only
            // in requests that create inodes; it has checked this one (default_permissions).
            guard idmappedMounts else {
                refuse(header, "carries no caller (uid \(header.uid), gid \(header.gid)) but idmapped mounts were not agreed")
                throw Errno.permission
            }
            if switchCredentials { worker.credentials.becomeRoot() }
            return
        }
        let ids = options.ids
        guard let uid = ids.uids.toHost(header.uid), let gid = ids.gids.toHost(header.gid) else {
            refuse(header, "uid \(header.uid) gid \(header.gid) is refused by a forbid-guest rule")
            throw Errno.permission
        }
        guard switchCredentials else { return }
        if idmappedMounts {
            // The kernel sends ids only with creations (and RENAME_WHITEOUT), mapped through the
            // mount's idmapping: they may belong to no one on the host, and /proc's groups are
            // the caller's unmapped ones. The kernel has checked the request: create with
            // Ferry's rights, then hand the inode over (`givingOwner`).
            worker.credentials.becomeRoot()
            return
        }
        var groups: [UInt32] = []
        if header.uid != 0, header.pid != 0, options.callerPIDsAreHostPIDs {
            // A group a forbid-guest rule refuses is left out: it could only have added rights.
            groups = callerGroups.groups(tid: header.pid, uid: header.uid, gid: header.gid)
            if !ids.gids.isIdentity { groups = groups.compactMap { ids.gids.toHost($0) } }
        }
        worker.credentials.become(uid: uid, gid: gid, groups: groups)
    }

    /// Whether FUSE_ALLOW_IDMAP was agreed at INIT.
    var idmappedMounts: Bool {
        InitFlags(rawValue: agreedFlags.load(ordering: .acquiring)).contains(.allowIdmap)
    }

    /// The opcodes for which an idmapped mount's kernel sends the caller's mapped ids.
    static func createsInode(_ opcode: UInt32) -> Bool {
        switch Opcode(rawValue: opcode) {
        case .mknod?, .mkdir?, .symlink?, .create?, .tmpfile?: return true
        default: return false
        }
    }

    /// Under idmapped mounts, gives a new inode the owner the request header names (translated
    /// to host ids), as creating as that caller would have: the group is left to the host when
    /// the parent directory is set-group-id. Returns the entry with its new attributes.
    func givingOwner(_ entry: Entry, _ header: InHeader, parent: UInt64, ctx: ThreadCredentials) throws(Errno) -> Entry {
        guard idmappedMounts, switchCredentials, Self.createsInode(header.opcode),
              let uid = options.ids.uids.toHost(header.uid), let gid = options.ids.gids.toHost(header.gid) else {
            return entry
        }
        do {
            var changes = AttributeChanges()
            if uid != entry.stat.stx_uid { changes.uid = uid }
            let parentMode = try fs.getattr(ctx, nodeID: parent, fh: nil).stx_mode
            if UInt32(parentMode) & UInt32(S_ISGID) == 0 && gid != entry.stat.stx_gid { changes.gid = gid }
            if changes.uid == nil && changes.gid == nil { return entry }
            return entry.with(stat: try fs.setattr(ctx, nodeID: entry.nodeID, changes: changes))
        } catch {
            logger.error("#\(header.unique): cannot give the new node \(entry.nodeID) owner \(uid):\(gid): \(error)")
            fs.forget(entry.nodeID, count: 1)   // the kernel never learns of it
            throw error
        }
    }

    /// `givingOwner` for a node created open (CREATE, TMPFILE): on failure the file is closed.
    func owningOpened(_ e: Entry, fh: UInt64, _ h: InHeader, ctx: ThreadCredentials) throws(Errno) -> Entry {
        do {
            return try givingOwner(e, h, parent: h.nodeID, ctx: ctx)
        } catch {
            try? fs.release(fh: fh)
            throw error
        }
    }

    /// CREATE. Under idmapped mounts the file is created as root with O_EXCL and then given its
    /// owner; a name that appeared on the host since the kernel's lookup is opened as the mapped
    /// caller instead (the host checks that open), never taken over by a chown.
    func create(_ h: InHeader, name: [UInt8], flags: UInt32, mode: UInt32, umask: UInt32,
                ctx: ThreadCredentials) throws(Errno) -> (Entry, UInt64) {
        guard idmappedMounts, switchCredentials else {
            return try fs.create(ctx, parent: h.nodeID, name: name, flags: flags, mode: mode, umask: umask)
        }
        do {
            let (created, fh) = try fs.create(ctx, parent: h.nodeID, name: name, flags: flags | UInt32(O_EXCL),
                                              mode: mode, umask: umask)
            return (try owningOpened(created, fh: fh, h, ctx: ctx), fh)
        } catch where error.rawValue == EEXIST && flags & UInt32(O_EXCL) == 0 {
            guard let uid = options.ids.uids.toHost(h.uid), let gid = options.ids.gids.toHost(h.gid) else {
                throw Errno.permission
            }
            logger.debug("#\(h.unique): CREATE found an existing name; opening it as \(uid):\(gid)")
            ctx.become(uid: uid, gid: gid, groups: [])
            return try fs.create(ctx, parent: h.nodeID, name: name, flags: flags, mode: mode, umask: umask)
        }
    }

    /// Logs a refusal: the first for each id at warning level, later ones at debug (a guest
    /// must not be able to flood the log).
    private func logRefusal(_ header: InHeader, id: UInt32, _ why: String) {
        let name = Opcode(rawValue: header.opcode)?.description ?? "opcode \(header.opcode)"
        let first = refusedIDs.withLock { seen in
            guard seen.count < 256 else { return false }
            return seen.insert(id).inserted
        }
        let line = "#\(header.unique) \(name): \(why); answering EPERM"
        if first { logger.warning("\(line)") } else { logger.debug("\(line)") }
    }

    private func refuse(_ header: InHeader, _ why: String) {
        logRefusal(header, id: header.uid, "caller \(why)")
    }

    /// SETATTR's new owner, guest -> host; EPERM when refused.
    func hostChanges(_ changes: AttributeChanges, _ header: InHeader) throws(Errno) -> AttributeChanges {
        var out = changes
        if let uid = changes.uid {
            guard let mapped = options.ids.uids.toHost(uid) else {
                logRefusal(header, id: uid, "chown to uid \(uid), which a forbid-guest rule refuses")
                throw Errno.permission
            }
            out.uid = mapped
        }
        if let gid = changes.gid {
            guard let mapped = options.ids.gids.toHost(gid) else {
                logRefusal(header, id: gid, "chown to gid \(gid), which a forbid-guest rule refuses")
                throw Errno.permission
            }
            out.gid = mapped
        }
        return out
    }

    /// Attributes for a reply, owners host -> guest.
    func guestAttributes(_ stat: HostStat) -> Attributes {
        var a = Conversions.attributes(stat)
        a.uid = options.ids.uids.toGuest(a.uid)
        a.gid = options.ids.gids.toGuest(a.gid)
        return a
    }

    /// A STATX reply's attributes, owners host -> guest.
    func guestStatx(_ stat: HostStat) -> StatxAttributes {
        var x = Conversions.statx(stat)
        x.uid = options.ids.uids.toGuest(x.uid)
        x.gid = options.ids.gids.toGuest(x.gid)
        return x
    }

    /// The value to write for xattr `name`: a POSIX ACL's owners guest -> host (nil: unchanged).
    func hostXattrValue(name: [UInt8], value: ByteView, _ header: InHeader) throws(Errno) -> [UInt8]? {
        guard !options.ids.isIdentity, IDTranslation.isACL(name) else { return nil }
        guard let translated = options.ids.aclToHost(value.bytes) else {
            logRefusal(header, id: IDRule.noID, "an ACL names an id a forbid-guest rule refuses")
            throw Errno.permission
        }
        return translated
    }

    /// The value read from xattr `name`: a POSIX ACL's owners host -> guest.
    func guestXattrValue(name: [UInt8], value: [UInt8]) -> [UInt8] {
        guard !options.ids.isIdentity, IDTranslation.isACL(name) else { return value }
        return options.ids.aclToGuest(value)
    }
}
