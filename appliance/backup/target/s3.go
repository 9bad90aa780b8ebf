package target

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/s3utils"
)

// partSize is the size of one part of an S3 multipart upload: the memory a
// Put holds at a time, whatever the size of the object.
const partSize = 16 << 20

// S3 is a backup target in an S3 bucket (AWS, or any S3-compatible server),
// under an optional key prefix. Puts stream as multipart uploads of
// partSize parts; an upload that fails is aborted, so no object appears.
// The bucket must exist: the target does not create it.
type S3 struct {
	client   *minio.Client
	bucket   string
	prefix   string // "" or "a/b/" (ends with a slash)
	endpoint string // host[:port] as given, "" for AWS
	region   string
	secure   bool
}

// Timeouts of an S3 target. A dead server makes a call fail within seconds
// (dial, a few retries), not minutes; a slow but alive one has two minutes
// to answer each request once it has the whole request; a server that hangs
// is bounded by the caller's context.
const (
	s3DialTimeout     = 5 * time.Second
	s3ResponseTimeout = 2 * time.Minute
	s3MaxRetries      = 3
)

func newS3(u *url.URL, credentialsFile string, getenv func(string) string) (*S3, error) {
	bucket := u.Host
	prefix := strings.Trim(u.Path, "/")
	s := &S3{bucket: bucket, secure: true}
	if err := s3utils.CheckValidBucketNameStrict(bucket); err != nil {
		return nil, fmt.Errorf("backup target %s: bucket %q: %v", redacted(u), bucket, err)
	}
	if prefix != "" {
		if err := checkName(prefix); err != nil {
			return nil, fmt.Errorf("backup target %s: prefix: %v", redacted(u), err)
		}
		s.prefix = prefix + "/"
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return nil, fmt.Errorf("backup target %s: malformed parameters", redacted(u))
	}
	for k, v := range q {
		if len(v) != 1 {
			return nil, fmt.Errorf("backup target %s: parameter %q given %d times", redacted(u), k, len(v))
		}
		switch val := v[0]; k {
		case "endpoint":
			if err := checkEndpoint(val); err != nil {
				return nil, fmt.Errorf("backup target %s: endpoint: %v", redacted(u), err)
			}
			s.endpoint = val
		case "region":
			if val == "" || strings.Trim(val, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != "" {
				return nil, fmt.Errorf("backup target %s: region %q is not a region name", redacted(u), val)
			}
			s.region = val
		case "tls":
			b, err := strconv.ParseBool(val)
			if err != nil {
				return nil, fmt.Errorf("backup target %s: tls=%q: want true or false", redacted(u), val)
			}
			s.secure = b
		default:
			return nil, fmt.Errorf("backup target %s: unknown parameter %q (known: endpoint, region, tls)", redacted(u), k)
		}
	}

	var creds s3Credentials
	if credentialsFile != "" {
		creds, err = readCredentials(credentialsFile)
	} else {
		creds, err = credentialsFromEnv(getenv)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s, err)
	}

	host := s.endpoint
	lookup := minio.BucketLookupPath
	if host == "" {
		host = "s3.amazonaws.com"
		lookup = minio.BucketLookupAuto
	}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: s3DialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          16,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       time.Minute,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: s3ResponseTimeout,
		ExpectContinueTimeout: 10 * time.Second,
		DisableCompression:    true,
		ForceAttemptHTTP2:     true,
	}
	client, err := minio.New(host, &minio.Options{
		Creds:        credentials.NewStaticV4(creds.AccessKeyID, creds.SecretAccessKey, creds.SessionToken),
		Secure:       s.secure,
		Region:       s.region,
		BucketLookup: lookup,
		Transport:    tr,
		MaxRetries:   s3MaxRetries,
	})
	if err != nil {
		// minio.New fails only on the endpoint; it never sees the secret in it.
		return nil, fmt.Errorf("%s: %v", s, err)
	}
	s.client = client
	return s, nil
}

// checkEndpoint accepts host or host:port, nothing like a URL.
func checkEndpoint(ep string) error {
	if ep == "" {
		return errors.New("empty (leave it out for AWS)")
	}
	if strings.Contains(ep, "://") {
		return fmt.Errorf("%q is not host or host:port (write tls=false for plain http)", ep)
	}
	if strings.Trim(ep, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:[]") != "" {
		return fmt.Errorf("%q is not host or host:port", ep)
	}
	host := ep
	if strings.Contains(ep, ":") && !strings.HasSuffix(ep, "]") {
		h, port, err := net.SplitHostPort(ep)
		if err != nil {
			return fmt.Errorf("%q is not host or host:port", ep)
		}
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("%q: bad port", ep)
		}
		host = h
	}
	if strings.Trim(host, "[]") == "" {
		return fmt.Errorf("%q has no host", ep)
	}
	return nil
}

// String is "s3://bucket/prefix", followed by the endpoint, region and tls
// parameters given in the url (never credentials).
func (s *S3) String() string {
	u := url.URL{Scheme: "s3", Host: s.bucket, Path: "/" + strings.TrimSuffix(s.prefix, "/")}
	if s.prefix == "" {
		u.Path = ""
	}
	// The values are checked to hold no character to escape.
	var q []string
	if s.endpoint != "" {
		q = append(q, "endpoint="+s.endpoint)
	}
	if s.region != "" {
		q = append(q, "region="+s.region)
	}
	if !s.secure {
		q = append(q, "tls=false")
	}
	u.RawQuery = strings.Join(q, "&")
	return u.String()
}

// Put streams r to name as a multipart upload of partSize parts (one part
// for a small object); only a completed upload makes the object appear.
func (s *S3) Put(ctx context.Context, name string, r io.Reader) (int64, error) {
	if err := checkName(name); err != nil {
		return 0, fmt.Errorf("%s: put: %w", s, err)
	}
	cr := &countingReader{r: ctxReader{ctx, r}}
	info, err := s.client.PutObject(ctx, s.bucket, s.prefix+name, cr, -1, minio.PutObjectOptions{
		PartSize:    partSize,
		ContentType: "application/octet-stream",
	})
	if err != nil {
		return cr.n, s.wrap("put", name, err)
	}
	return info.Size, nil
}

// Get opens name; when absent the error wraps fs.ErrNotExist. The first
// request is made here, so that a missing object or bucket is reported by
// Get rather than by the first Read.
func (s *S3) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	if err := checkName(name); err != nil {
		return nil, fmt.Errorf("%s: get: %w", s, err)
	}
	obj, err := s.client.GetObject(ctx, s.bucket, s.prefix+name, minio.GetObjectOptions{})
	if err != nil {
		return nil, s.wrap("get", name, err)
	}
	if _, err := obj.Stat(); err != nil {
		obj.Close()
		err = s.wrap("get", name, err)
		if errors.Is(err, fs.ErrNotExist) {
			// Some servers (versitygw) answer NoSuchKey for a key in a
			// missing bucket: tell the two apart, the bucket is a mistake
			// to fix and not an absent object.
			if ok, berr := s.client.BucketExists(ctx, s.bucket); berr == nil && !ok {
				return nil, s.wrap("get", name, minio.ErrorResponse{Code: "NoSuchBucket"})
			}
		}
		return nil, err
	}
	return &s3Reader{obj: obj, s: s, name: name}, nil
}

// Delete removes name; absent is not an error.
func (s *S3) Delete(ctx context.Context, name string) error {
	if err := checkName(name); err != nil {
		return fmt.Errorf("%s: delete: %w", s, err)
	}
	err := s.client.RemoveObject(ctx, s.bucket, s.prefix+name, minio.RemoveObjectOptions{})
	if err != nil && minio.ToErrorResponse(err).Code != "NoSuchKey" {
		return s.wrap("delete", name, err)
	}
	return nil
}

// List calls fn for every object whose name starts with prefix, in lexical
// order (S3 lists keys in that order), a page of 1,000 keys at a time.
// Keys ending in "/" (folder markers some tools make) are not objects and
// are not listed.
func (s *S3) List(ctx context.Context, prefix string, fn func(name string, size int64) error) error {
	if err := checkPrefix(prefix); err != nil {
		return fmt.Errorf("%s: list: %w", s, err)
	}
	for obj := range s.client.ListObjectsIter(ctx, s.bucket, minio.ListObjectsOptions{Prefix: s.prefix + prefix, Recursive: true}) {
		if obj.Err != nil {
			return s.wrap("list", prefix, obj.Err)
		}
		name, ok := strings.CutPrefix(obj.Key, s.prefix)
		if !ok || name == "" || strings.HasSuffix(name, "/") {
			continue
		}
		if err := fn(name, obj.Size); err != nil {
			return err
		}
	}
	// The listing ends quietly when ctx does: say so.
	if err := ctx.Err(); err != nil {
		return s.wrap("list", prefix, err)
	}
	return nil
}

// wrap gives an S3 error its context and a clear meaning for the errors an
// operator can fix: missing bucket, refused credentials, missing object
// (which wraps fs.ErrNotExist). S3 error messages hold no secrets.
func (s *S3) wrap(op, name string, err error) error {
	var er minio.ErrorResponse
	if errors.As(err, &er) {
		switch er.Code {
		case "NoSuchBucket":
			return fmt.Errorf("%s: %s %s: bucket %s does not exist (the target does not create it)", s, op, name, s.bucket)
		case "NoSuchKey":
			return fmt.Errorf("%s: %s %s: %w", s, op, name, fs.ErrNotExist)
		case "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "ExpiredToken":
			return fmt.Errorf("%s: %s %s: access refused (%s), check the credentials: %s", s, op, name, er.Code, er.Message)
		}
		if er.StatusCode == http.StatusNotFound && er.Code == "" {
			return fmt.Errorf("%s: %s %s: %w", s, op, name, fs.ErrNotExist)
		}
	}
	return fmt.Errorf("%s: %s %s: %w", s, op, name, err)
}

// s3Reader gives read errors the target's and the object's name.
type s3Reader struct {
	obj  *minio.Object
	s    *S3
	name string
}

func (r *s3Reader) Read(p []byte) (int, error) {
	n, err := r.obj.Read(p)
	if err != nil && err != io.EOF {
		err = r.s.wrap("get", r.name, err)
	}
	return n, err
}

func (r *s3Reader) Close() error { return r.obj.Close() }

// countingReader counts what a failed Put had read.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
