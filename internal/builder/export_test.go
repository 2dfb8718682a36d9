package builder

// LocalLockName lets the external VM tests name the lock file a local build
// leaves in the state directory.
var LocalLockName = localLockName
