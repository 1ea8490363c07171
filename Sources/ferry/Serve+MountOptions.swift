import FerryEngine
import FerryFS
import FerryIO
import FerryNotify
import FerrySandbox
import Logging

extension Serve {
    /// This command with the `-o` options applied over the `--` options given beside them.
    func applying(_ list: MountOptionList) throws(OptionError) -> Serve {
        var serve = self
        if let readOnly = list.readOnly { serve.readonly = readOnly }
        for option in list.ferry {
            let value = option.value ?? ""
            switch option.name {
            case "cache": serve.cache = try Serve.value(CacheMode(rawValue: value), for: option)
            case "passthrough": serve.passthrough = try Serve.value(PassthroughChoice(rawValue: value), for: option)
            case "transport": serve.transport = try Serve.value(TransportChoice(rawValue: value), for: option)
            case "threads": serve.threads = try Serve.value(Int(value), for: option)
            case "io-engine": serve.ioEngine = try Serve.value(IOEngineKind(rawValue: value), for: option)
            case "io-depth": serve.ioDepth = try Serve.value(Int(value), for: option)
            case "inode-file-handles": serve.inodeFileHandles = try Serve.value(InodeFileHandles(rawValue: value), for: option)
            case "max-inodes": serve.maxInodes = try Serve.value(Int(value), for: option)
            case "max-open-files": serve.maxOpenFiles = try Serve.value(Int(value), for: option)
            case "max-lock-waiters": serve.maxLockWaiters = try Serve.value(Int(value), for: option)
            case "rlimit-nofile": serve.rlimitNofile = try Serve.value(Int(value), for: option)
            case "notify-watcher": serve.notifyWatcher = try Serve.value(WatcherChoice(rawValue: value), for: option)
            case "notify-ring-size": serve.notifyRingSize = try Serve.value(Int(value), for: option)
            case "log-level": serve.logLevel = try Serve.value(Logger.Level(rawValue: value), for: option)
            case "log-file": serve.logFile = value
            case "sandbox": serve.sandbox = try Serve.value(SandboxMode(rawValue: value), for: option)
            case "seccomp": serve.seccomp = try Serve.value(SeccompMode(rawValue: value), for: option)
            case "writeback": serve.writeback = true
            case "readonly": serve.readonly = true
            case "no-xattr": serve.noXattr = true
            case "no-posix-locks": serve.noPosixLocks = true
            case "no-flock": serve.noFlock = true
            case "allow-other": serve.allowOther = true
            case "no-allow-other": serve.allowOther = false
            case "notify": serve.notify = true
            case "no-notify": serve.notify = false
            case "stats": serve.stats = true
            case "translate-uid": serve.translateUID.append(value)
            case "translate-gid": serve.translateGID.append(value)
            case "idmapped-mounts": serve.idmappedMounts = true
            default: throw OptionError("unknown mount option '\(option.name)'")
            }
        }
        return serve
    }

    private static func value<T>(_ value: T?, for option: MountOptionList.FerryOption) throws(OptionError) -> T {
        guard let value else { throw OptionError("mount option \(option.name)=\(option.value ?? ""): invalid value") }
        return value
    }
}
