package kinesis

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
)

// faultClient sits at the SDK boundary, in front of the real emulator, and answers chosen calls
// itself with what no emulator produces (throttling, credential errors). It is set through the
// binding's unexported sdkHTTPClient field, so no component metadata can switch it on.
type faultClient struct {
	next aws.HTTPClient

	mu    sync.Mutex
	calls map[string]int
	fault func(op string, call int, req *http.Request) *http.Response
}

func newFaultClient(fault func(op string, call int, req *http.Request) *http.Response) *faultClient {
	return &faultClient{
		next:  awshttp.NewBuildableClient(),
		calls: map[string]int{},
		fault: fault,
	}
}

// Do counts the call by API operation (Kinesis_20131202.PutRecord -> PutRecord) and injects the
// fault, if any, instead of forwarding.
func (c *faultClient) Do(req *http.Request) (*http.Response, error) {
	op := req.Header.Get("X-Amz-Target")
	if i := strings.LastIndexByte(op, '.'); i >= 0 {
		op = op[i+1:]
	}
	c.mu.Lock()
	c.calls[op]++
	n := c.calls[op]
	c.mu.Unlock()
	if c.fault != nil {
		if resp := c.fault(op, n, req); resp != nil {
			return resp, nil
		}
	}
	return c.next.Do(req)
}

func (c *faultClient) count(op string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls[op]
}

// awsErrorResponse is an AWS JSON 1.1 error as Kinesis sends it.
func awsErrorResponse(req *http.Request, status int, code, message string) *http.Response {
	if req.Body != nil {
		_, _ = io.Copy(io.Discard, req.Body)
		_ = req.Body.Close()
	}
	body := fmt.Sprintf(`{"__type":%q,"message":%q}`, code, message)
	return &http.Response{
		StatusCode:    status,
		Status:        fmt.Sprintf("%d %s", status, http.StatusText(status)),
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        http.Header{"Content-Type": []string{"application/x-amz-json-1.1"}, "X-Amzn-Requestid": []string{"fault"}},
		Body:          io.NopCloser(strings.NewReader(body)),
		ContentLength: int64(len(body)),
		Request:       req,
	}
}

func throttled(req *http.Request) *http.Response {
	return awsErrorResponse(req, http.StatusBadRequest, "ProvisionedThroughputExceededException", "Rate exceeded for shard")
}
