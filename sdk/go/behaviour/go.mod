// A partner's module using the SDK through a replace, as it would use a
// tagged release: run under sdk/testbed.py (tests/api/sdks.rs does).
module partner.example/behaviour

go 1.19

require github.com/keygate/keygate/sdk/go v0.1.0

replace github.com/keygate/keygate/sdk/go => ../
