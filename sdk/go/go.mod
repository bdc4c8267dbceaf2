module github.com/keygate/keygate/sdk/go

go 1.19
