import FerryIO
import FerrySystem
import FerryTransport
import Glibc

/// The fastest correct configuration `ferry serve` can run here: FUSE passthrough, the I/O
/// engine, the transport. Each choice is what the user asked for when they asked, else the
/// fastest this kernel and these privileges allow, with the reason. The start-up log gives it
/// in one line; `ferry serve --explain` prints it without mounting.
struct AutoConfiguration {
    /// One setting: what runs and why.
    struct Decision {
        let setting: String
        let value: String
        let reason: String
    }

    /// Offer FUSE passthrough at INIT (the kernel still confirms it there).
    let passthrough: Bool
    /// The I/O engine for the data requests that reach Ferry.
    let ioEngine: IOEngineKind
    /// How requests reach Ferry.
    let transport: Transport
    /// Every decision, in order.
    let decisions: [Decision]

    /// Decides for `serve`'s options on this host. Probes only (a throw-away io_uring, /proc,
    /// /sys, uname); changes nothing. Throws when an explicit request cannot be met here.
    init(_ serve: Serve) throws(StartupError) {
        var decisions: [Decision] = []

        let kernel = AutoConfiguration.kernelRelease()
        let passthroughReason: String?
        if serve.passthrough == .never {
            passthroughReason = "--passthrough never"
        } else if serve.writeback {
            passthroughReason = "--writeback was given, and the kernel cannot combine the writeback cache with passthrough"
        } else if let reason = FUSEBackingDevice.whyNotPrivileged() {
            passthroughReason = "\(reason), which FUSE_DEV_IOC_BACKING_OPEN needs"
        } else if let (major, minor) = kernel.version, (major, minor) < (6, 9) {
            passthroughReason = "Linux \(kernel.release) has no FUSE passthrough (6.9 and later)"
        } else {
            passthroughReason = nil
        }
        passthrough = passthroughReason == nil
        decisions.append(Decision(
            setting: "passthrough", value: passthrough ? "on" : "off",
            reason: passthroughReason ?? "root with CAP_SYS_ADMIN, Linux \(kernel.release); plain files are read and written by the kernel (it confirms at INIT)"))

        switch (serve.ioEngine, IOEngineFactory.uringAvailable()) {
        case (.sync, _):
            ioEngine = .sync
            decisions.append(Decision(setting: "I/O engine", value: "sync", reason: "--io-engine sync"))
        case (.uring, .success):
            ioEngine = .uring
            decisions.append(Decision(setting: "I/O engine", value: "io_uring",
                                      reason: "io_uring works here; \(serve.ioDepth) data request(s) in flight per thread"))
        case let (.uring, .failure(error)):
            ioEngine = .sync
            decisions.append(Decision(setting: "I/O engine", value: "sync", reason: "io_uring cannot be set up here (\(error))"))
        }
        let parameter = FUSERingSupport.parameterPath
        let transportReason: String
        switch (serve.transport, FUSERingSupport.state) {
        case (.dev, _):
            transport = .devFuse
            transportReason = "--transport dev"
        case (_, .enabled):
            transport = .ring(depth: FUSERingServer.defaultDepth, required: serve.transport == .uring)
            transportReason = "\(parameter) is on; one queue per CPU (INIT confirms it)"
        case let (choice, state):
            var why = "this kernel has no FUSE-over-io_uring (\(parameter) is missing; Linux 6.14+ with CONFIG_FUSE_IO_URING)"
            if case let .disabled(value) = state {
                why = "the kernel's FUSE-over-io_uring is off (\(parameter) is \(value); as root: echo 1 > \(parameter))"
            }
            if choice == .uring { throw StartupError("--transport uring: \(why)") }
            transport = .devFuse
            transportReason = why
        }
        decisions.append(Decision(setting: "transport", value: transport == .devFuse ? "/dev/fuse" : "io_uring",
                                  reason: transportReason))
        self.decisions = decisions
    }

    /// All decisions in one line, for the start-up log.
    var summary: String {
        decisions.map { "\($0.setting) \($0.value) (\($0.reason))" }.joined(separator: "; ")
    }

    /// The running kernel's release string and its major.minor version.
    static func kernelRelease() -> (release: String, version: (Int, Int)?) {
        var names = utsname()
        uname(&names)
        let release = withUnsafeBytes(of: &names.release) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
        let parts = release.split(whereSeparator: { !$0.isNumber }).prefix(2).compactMap { Int($0) }
        return (release, parts.count == 2 ? (parts[0], parts[1]) : nil)
    }
}
