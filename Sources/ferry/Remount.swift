import FerrySystem
import Glibc

/// `mount -o remount,OPTS MOUNTPOINT` on a Ferry mount: util-linux runs mount.fuse3, which runs
/// `ferry SOURCE MOUNTPOINT -o remount,OPTS` with the options merged from /proc/mounts, fstab
/// and the command line. The kernel lets a FUSE mount change ro/rw, nosuid, nodev and noexec in
/// place (mount(2) with MS_REMOUNT), and sync/dirsync; that is what this does. What the server was started with
/// stays: Ferry's own options are ignored here (fstab repeats them), the atime options must
/// match the running mount (the server reads SOURCE through a mount set up at start), and a
/// mount started `ro` stays read-only in the server even when remounted rw.
enum Remount {
    static func perform(source: String, mountpoint: String, list: MountOptionList) throws {
        let path = Preflight.resolved(mountpoint) ?? mountpoint
        guard let entry = MountTable.entries().last(where: { $0.mountpoint == path }) else {
            throw StartupError("remount: nothing is mounted at \(mountpoint)")
        }
        let current = Set(entry.options)
        let mode: AtimeMode = current.contains("noatime") ? .noatime : current.contains("relatime") ? .relatime : .strictatime
        let noDirAtime = current.contains("nodiratime")
        if list.changesHostAccess {
            let asked = (list.atime ?? .relatime, list.noDirAtime)
            if asked != (mode, noDirAtime) {
                throw StartupError("remount: \(HostAccess.words(asked.0, asked.1)) cannot be changed on a running mount (it is \(HostAccess.words(mode, noDirAtime))): Ferry reads SOURCE through a mount set up at start; unmount and mount again")
            }
        }
        // As at start: a root server keeps SOURCE's own nosuid/nodev/noexec.
        let sourceFlags = sourceStatfsFlags(source)
        var flags: UInt = 0
        if list.readOnly == true { flags |= UInt(MS_RDONLY) }
        if list.noSuid || sourceFlags & HostFlags.stNoSuid != 0 { flags |= UInt(MS_NOSUID) }
        if list.noDev || sourceFlags & HostFlags.stNoDev != 0 { flags |= UInt(MS_NODEV) }
        if list.noExec || sourceFlags & HostFlags.stNoExec != 0 { flags |= UInt(MS_NOEXEC) }
        switch mode {
        case .noatime: flags |= UInt(MS_NOATIME)
        case .relatime: flags |= UInt(MS_RELATIME)
        case .strictatime: flags |= UInt(MS_STRICTATIME)
        }
        if noDirAtime { flags |= UInt(MS_NODIRATIME) }
        if list.sync { flags |= UInt(MS_SYNCHRONOUS) }
        if list.dirSync { flags |= UInt(MS_DIRSYNC) }
        do {
            try HostMount.remount(path, flags: flags)
        } catch {
            throw StartupError("remount of \(mountpoint) failed: \(error)")
        }
    }

    /// SOURCE's statfs flags (0 if it cannot be read).
    private static func sourceStatfsFlags(_ source: String) -> Int {
        guard let fd = try? Host.openat(HostFlags.atFDCWD, CName(source), flags: HostFlags.oPath | HostFlags.oDirectory) else { return 0 }
        defer { Host.close(fd) }
        return (try? Host.statfs(fd)).map { Int($0.f_flags) } ?? 0
    }
}
