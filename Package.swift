// swift-tools-version: 6.0
import PackageDescription

let package = Package(
    name: "Ferry",
    products: [
        .executable(name: "ferry", targets: ["ferry"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    ],
    targets: [
        // libfuse3: used for mounting only (session, fusermount3, the /dev/fuse fd).
        .systemLibrary(name: "CFUSE", pkgConfig: "fuse3", providers: [.apt(["libfuse3-dev"])]),
        // Thin C shims for syscalls Swift cannot call directly (variadic ioctl/syscall,
        // flexible-array structs such as struct file_handle).
        .target(name: "CFerrySys"),
        // liburing: the io_uring rings of the I/O core and of the FUSE-over-io_uring transport.
        .systemLibrary(name: "CURing", pkgConfig: "liburing", providers: [.apt(["liburing-dev"])]),
        // libseccomp: the system-call allow-list the sandbox installs (FerrySandbox).
        .systemLibrary(name: "CSeccomp", pkgConfig: "libseccomp", providers: [.apt(["libseccomp-dev"])]),
        // Typed Swift wrappers over the host syscalls: the only place raw pointers meet the kernel.
        .target(name: "FerrySystem", dependencies: [
            "CFerrySys",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // FUSE wire format: decode requests, encode replies. Pure, no syscalls.
        .target(name: "FerryProtocol"),
        // The I/O core: data operations batched into io_uring submissions, or run by plain syscalls.
        .target(name: "FerryIO", dependencies: [
            "CURing", "FerrySystem",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // The passthrough filesystem over one host directory.
        .target(name: "FerryFS", dependencies: [
            "FerrySystem",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // Change notifications: host watcher -> change ring -> invalidator -> FUSE notify messages.
        .target(name: "FerryNotify", dependencies: [
            "FerryProtocol", "FerryFS", "FerrySystem",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // Request dispatch: decoded request -> filesystem -> encoded reply.
        .target(name: "FerryEngine", dependencies: [
            "FerryProtocol", "FerryFS", "FerryIO", "FerrySystem",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // Transports: /dev/fuse sessions (mount through libfuse, reader threads) and
        // FUSE-over-io_uring queues.
        .target(name: "FerryTransport", dependencies: [
            "CFUSE", "CURing", "FerryEngine", "FerryIO", "FerryProtocol", "FerrySystem",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // vhost-user socket plumbing (SCM_RIGHTS, unix sockets) and ring memory barriers.
        .target(name: "CFerryVhost"),
        // The vhost-user-fs back-end: message framing, guest memory, split virtqueues, queue threads.
        .target(name: "FerryVhost", dependencies: [
            "CFerryVhost", "FerryEngine", "FerryIO", "FerryProtocol", "FerrySystem",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // Fuzz targets: every parser of untrusted input as a function of bytes (README, "Fuzzing").
        .target(name: "FerryFuzz", dependencies: [
            "FerryEngine", "FerryFS", "FerryProtocol", "FerrySystem", "FerryVhost",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // libFuzzer entry point (built with -sanitize=fuzzer -DFUZZING), else a replay tool.
        .executableTarget(name: "ferry-fuzz", dependencies: ["FerryFuzz"]),
        // The sandbox a server enters after set-up: namespaces and a new root, least
        // capabilities, the seccomp allow-list.
        .target(name: "FerrySandbox", dependencies: [
            "CSeccomp", "CFerrySys", "FerrySystem",
        ]),
        .executableTarget(name: "ferry", dependencies: [
            "FerryTransport", "FerryVhost", "FerrySandbox", "FerryEngine", "FerryFS", "FerryIO", "FerryNotify", "FerrySystem",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .testTarget(name: "FerryProtocolTests", dependencies: ["FerryProtocol"]),
        // The committed fuzz corpora and crash inputs replayed through every fuzz target.
        .testTarget(name: "FerryFuzzTests", dependencies: ["FerryFuzz"], exclude: ["corpus", "make-seeds.py"]),
        // Both I/O engines on real files: io_uring held to the sync engine's results.
        .testTarget(name: "FerryIOTests", dependencies: ["FerryIO", "FerrySystem"]),
        // The change ring and invalidation batching, without a mount.
        .testTarget(name: "FerryNotifyTests", dependencies: ["FerryNotify", "FerryProtocol", "FerrySystem"]),
        // The engine and filesystem driven with raw request bytes on a scratch directory (no mount).
        .testTarget(name: "FerryEngineTests", dependencies: [
            "FerryEngine", "FerryFS", "FerryProtocol", "FerrySystem",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // vhost-user framing, guest memory translation and split virtqueues, without a guest.
        .testTarget(name: "FerryVhostTests", dependencies: [
            "FerryVhost", "CFerryVhost", "FerryProtocol", "FerryEngine", "FerryFS", "FerryIO", "FerrySystem",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // The seccomp allow-list and the capability plan as data (SandboxTests run them for real).
        .testTarget(name: "FerrySandboxTests", dependencies: ["FerrySandbox", "CSeccomp", "FerrySystem"]),
        // Reader-thread plumbing of the /dev/fuse transport, on pipes (no mount).
        .testTarget(name: "FerryTransportTests", dependencies: ["FerryTransport", "FerryProtocol", "FerrySystem"]),
        // Mount-level tests: start `ferry serve` and drive the mount with real tools.
        .testTarget(name: "FerryIntegrationTests", exclude: ["scripts"],
                    swiftSettings: [.swiftLanguageMode(.v5)]),
    ]
)
