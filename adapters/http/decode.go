package http

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
)

// maxBodyBytes bounds request bodies; the largest valid body is a task with
// a 10000-character description.
const maxBodyBytes = 64 << 10

// decodeJSON reads one JSON object into dst, rejecting unknown fields,
// wrong types, trailing data, oversized bodies and non-JSON content types,
// each with an error naming the field. An empty body decodes as {} when
// allowEmpty is set.
func decodeJSON(w http.ResponseWriter, r *http.Request, dst any, allowEmpty bool) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return &apiError{Status: http.StatusRequestEntityTooLarge, Type: typeInvalidRequest, Code: "body_too_large",
				Message: fmt.Sprintf("request body exceeds %d bytes", maxBodyBytes)}
		}
		return badRequest("invalid_body", "", "could not read request body")
	}
	if len(strings.TrimSpace(string(body))) == 0 {
		if allowEmpty {
			return nil
		}
		return badRequest("missing_body", "", "a JSON request body is required")
	}
	if err := checkContentType(r); err != nil {
		return err
	}
	return decodeBody(body, dst)
}

func checkContentType(r *http.Request) error {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return &apiError{Status: http.StatusUnsupportedMediaType, Type: typeInvalidRequest, Code: "unsupported_media_type",
			Message: "set Content-Type: application/json"}
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || mt != "application/json" {
		return &apiError{Status: http.StatusUnsupportedMediaType, Type: typeInvalidRequest, Code: "unsupported_media_type",
			Message: fmt.Sprintf("Content-Type %q is not supported; send application/json", ct)}
	}
	return nil
}

// decodeBody strictly decodes a JSON object; it is the part fuzz tests drive.
func decodeBody(body []byte, dst any) error {
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return jsonError(err)
	}
	if dec.More() {
		return badRequest("invalid_json", "", "the body must hold exactly one JSON object")
	}
	var extra any
	if err := dec.Decode(&extra); err != io.EOF {
		return badRequest("invalid_json", "", "the body must hold exactly one JSON object")
	}
	return nil
}

func jsonError(err error) error {
	var syntax *json.SyntaxError
	var typeErr *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syntax):
		return badRequest("invalid_json", "", fmt.Sprintf("malformed JSON at byte %d", syntax.Offset))
	case errors.As(err, &typeErr):
		field := typeErr.Field
		if field == "" {
			return badRequest("invalid_json", "", "the body must be a JSON object")
		}
		return badRequest("invalid_type", field, fmt.Sprintf("%s must be a JSON %s, got %s", field, jsonKind(typeErr.Type.Kind().String()), typeErr.Value))
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		// encoding/json has no typed error for unknown fields; its message
		// format is stable since Go 1.10.
		field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return badRequest("unknown_field", field, fmt.Sprintf("unknown field %q; check the API reference for this route", field))
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return badRequest("invalid_json", "", "the JSON body ends early")
	}
	return badRequest("invalid_json", "", "malformed JSON body")
}

func jsonKind(goKind string) string {
	switch goKind {
	case "int64", "int", "int32":
		return "integer"
	case "bool":
		return "boolean"
	case "string":
		return "string"
	case "ptr":
		return "value of another type"
	}
	return goKind
}
