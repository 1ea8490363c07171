import FerryFS
import FerrySystem
import Glibc
import Logging

/// How Ferry's own accesses to SOURCE honour the atime options. FUSE inodes never update
/// their atime themselves (the kernel sets S_NOATIME on them): the atime a reader moves is the
/// one Ferry's host read or readdir moves on SOURCE, so the atime options have to change the
/// mount through which Ferry reaches SOURCE. Run as root, Ferry then serves from a private,
/// detached copy of SOURCE's mount tree carrying the options (read-only too with `ro`); an
/// ordinary user cannot make one and gets a start-up error unless SOURCE's mount already
/// behaves as asked.
struct HostAccess {
    /// Attributes of the private copy of SOURCE's mount; nil when SOURCE's own mount serves.
    let privateMount: MountAttributes?
    /// The atime behaviour the server has (asked for, or SOURCE's mount's).
    let atime: AtimeMode
    let noDirAtime: Bool
    let root: Bool

    init(list: MountOptionList, source: String, root: Bool, readOnly: Bool) throws {
        self.root = root
        let current = HostAccess.sourceAtime(source)
        guard list.changesHostAccess else {
            (atime, noDirAtime, privateMount) = (current.mode, current.noDirAtime, nil)
            return
        }
        // As mount(2): an atime option without a mode means relatime.
        atime = list.atime ?? .relatime
        noDirAtime = list.noDirAtime
        if atime == current.mode && noDirAtime == current.noDirAtime {
            privateMount = nil
        } else if root {
            privateMount = MountAttributes(readOnly: readOnly ? true : nil, atime: atime, noDirAtime: noDirAtime)
        } else {
            throw StartupError("\(HostAccess.words(atime, noDirAtime)) needs root: SOURCE's mount is \(HostAccess.words(current.mode, current.noDirAtime)), and an ordinary user's server cannot reach SOURCE through a mount of its own")
        }
    }

    /// ", noatime" and the like for the start-up log line ("" without a private mount).
    var summary: String {
        privateMount == nil ? "" : ", \(HostAccess.words(atime, noDirAtime)) through a private mount of SOURCE"
    }

    /// "noatime", "relatime,nodiratime", ... for messages.
    func describe(_ attributes: MountAttributes) -> String {
        HostAccess.words(attributes.atime ?? atime, attributes.noDirAtime ?? noDirAtime)
    }

    /// Gives the FUSE mount the atime flags the server has, so /proc/mounts and findmnt show
    /// them and `mount -o remount` sends them back unchanged (they change nothing else: FUSE
    /// inodes ignore them). Root only; a failure is only logged.
    /// A sandboxed server asks its host helper (`helper`), which still has the path.
    func showOnMount(_ mountpoint: String, helper: HostHelper?, logger: Logger) {
        guard root else { return }
        if let helper {
            if !helper.showAtime(atime, noDirAtime: noDirAtime) {
                logger.warning("could not set \(HostAccess.words(atime, noDirAtime)) on \(mountpoint) for display (see the host helper)")
            }
            return
        }
        do {
            try HostMount.setAttributes(path: mountpoint, MountAttributes(atime: atime, noDirAtime: noDirAtime))
        } catch {
            logger.warning("could not set \(HostAccess.words(atime, noDirAtime)) on \(mountpoint) for display: \(error)")
        }
    }

    static func words(_ mode: AtimeMode, _ noDirAtime: Bool) -> String {
        mode.rawValue + (noDirAtime ? ",nodiratime" : "")
    }

    /// The atime mode of the mount SOURCE is on (relatime if it cannot be read).
    static func sourceAtime(_ source: String) -> (mode: AtimeMode, noDirAtime: Bool) {
        guard let fd = try? Host.openat(HostFlags.atFDCWD, CName(source), flags: HostFlags.oPath | HostFlags.oDirectory) else {
            return (.relatime, false)
        }
        defer { Host.close(fd) }
        guard let flags = (try? Host.statfs(fd)).map({ Int($0.f_flags) }) else { return (.relatime, false) }
        return (atimeMode(statfsFlags: flags), flags & HostFlags.stNoDirAtime != 0)
    }

    /// The atime mode statfs `f_flags` describe.
    static func atimeMode(statfsFlags flags: Int) -> AtimeMode {
        if flags & HostFlags.stNoAtime != 0 { return .noatime }
        if flags & HostFlags.stRelatime != 0 { return .relatime }
        return .strictatime
    }
}
