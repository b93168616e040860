package store

var VersionOK = versionOK
