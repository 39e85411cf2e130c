// Package testfunctions holds the functions the function host's tests
// build and run as real processes: lambda (on github.com/aws/aws-lambda-go,
// unmodified lambda.Start), fc (a Function Compute function written as
// fc-runtime-go-sdk documents, on that SDK's invoke loop), native
// (on function/native) and pipeecho (the benchmarks' Go pipe floor).
package testfunctions
